import GRPCCore
import Logging
import TesseraCore
import TesseraProto
import TesseraRuntime

/// The gRPC face of the datapath; one RPC per file in `DatapathService+*.swift`.
public struct DatapathServiceHandler: Tessera_Datapath_V1_DatapathService.SimpleServiceProtocol {
  let datapath: Datapath
  let logger: Logger

  public init(datapath: Datapath, logger: Logger) {
    self.datapath = datapath
    self.logger = logger
  }
}
