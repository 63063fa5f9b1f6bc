import GRPCCore
import Logging
import TesseraCore
import TesseraProto
import TesseraRuntime

/// The gRPC face of the datapath; one RPC per file in `DatapathService+*.swift`.
public struct DatapathServiceHandler: Tessera_Datapath_V1_DatapathService.SimpleServiceProtocol {
  let datapath: Datapath
  let flows: FlowLog
  let logger: Logger

  public init(datapath: Datapath, flows: FlowLog = FlowLog(), logger: Logger) {
    self.datapath = datapath
    self.flows = flows
    self.logger = logger
  }
}
