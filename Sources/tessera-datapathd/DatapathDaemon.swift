import ArgumentParser
import DatapathService
import Logging
import Metrics
import TesseraProto
import TesseraRuntime

/// `tessera-datapathd`: realises endpoint policy and the ipcache.
@main
struct DatapathDaemon: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "tessera-datapathd",
    abstract: "Tessera datapath service: realises identity policy in the kernel.")

  @OptionGroup var options: DaemonOptions

  @Option(
    help:
      "Backend: bpf (the default; refuses to start without eBPF), memory (test backend: enforces nothing), or auto (bpf, else the memory test backend: for development only)."
  )
  var backend: String = "bpf"

  @Option(help: "bpffs directory for pinned maps and programs.")
  var bpfPinDir: String = "/sys/fs/bpf/tessera"

  @Option(help: "Compiled BPF object (default: located next to the build or in /usr/lib/tessera).")
  var bpfObject: String?

  @Option(
    help: ArgumentHelp(
      "Flows the node's conntrack table holds (LRU: when full, a new flow evicts the least recently used).",
      discussion:
        "Each pod-to-pod connection on one node takes two entries, one per endpoint. A change replaces the table at start-up, its flows copied over."
    ))
  var conntrackMaxEntries: UInt32 = BPFDatapathBackend.Configuration.defaultConntrackMaxEntries

  func bpfConfiguration() throws -> BPFDatapathBackend.Configuration {
    guard let object = bpfObject ?? BPFDatapathBackend.Configuration.locateObject() else {
      throw ValidationError(
        "BPF object not found: build it with scripts/build-bpf.sh or pass --bpf-object")
    }
    return BPFDatapathBackend.Configuration(
      objectPath: object, pinDirectory: bpfPinDir, conntrackMaxEntries: conntrackMaxEntries)
  }

  func validate() throws {
    guard ["auto", "bpf", "memory"].contains(backend) else {
      throw ValidationError("--backend must be auto, bpf or memory")
    }
    let range = BPFDatapathBackend.Configuration.conntrackMaxEntriesRange
    guard range.contains(conntrackMaxEntries) else {
      throw ValidationError(
        "--conntrack-max-entries must be between \(range.lowerBound) and \(range.upperBound)")
    }
  }

  func run() async throws {
    options.bootstrapLogging()
    let logger = Logger(label: "tessera.datapathd")
    let chosen: any DatapathBackend
    switch backend {
    case "memory":
      logger.warning("using the memory test backend: policy is NOT enforced")
      chosen = MemoryDatapathBackend()
    case "bpf":
      if let reason = BPFDatapathBackend.probe() {
        // Fail loudly: a node that cannot enforce must not pretend to.
        throw ValidationError(
          "eBPF is unusable here: \(reason). The memory backend (--backend memory) is a test backend that enforces nothing."
        )
      }
      chosen = try BPFDatapathBackend(configuration: bpfConfiguration(), logger: logger)
    default:
      if let reason = BPFDatapathBackend.probe() {
        logger.warning(
          "eBPF unavailable (\(reason)); using the memory test backend: policy is NOT enforced")
        chosen = MemoryDatapathBackend()
      } else {
        chosen = try BPFDatapathBackend(configuration: bpfConfiguration(), logger: logger)
      }
    }
    let datapath = try Datapath(backend: chosen, logger: logger)
    let eventReader = try chosen.makeEventReader()
    let flows = FlowLog(lostInKernel: { eventReader?.lostInKernel ?? 0 })
    let totals = PacketTotals()
    let eventPump = eventReader.map { FlowEventPump(reader: $0, log: flows, logger: logger) }
    let health = HealthService(serviceNames: [
      Tessera_Datapath_V1_DatapathService.descriptor.fullyQualifiedService
    ])
    try await Daemon(
      service: .datapath, runDirectory: options.runDirectory, logger: logger,
      tcpListener: try options.tcpListener()
    ).run(
      rpcServices: [DatapathServiceHandler(datapath: datapath, flows: flows, logger: logger)],
      health: health,
      backgroundServices: (eventPump.map { [$0] } ?? [])
        + ((chosen as? BPFDatapathBackend).map { [HostAddressWatch(backend: $0, logger: logger)] }
          ?? [])
        + options.metricsServices(for: .datapath, logger: logger) {
          Gauge(label: "tessera_datapath_endpoints").record(datapath.endpoints().count)
          totals.sample(datapath, eventsLost: flows.statistics.lostInKernel)
        },
      backend: { datapath.backendName },
      details: { ["endpoints": "\(datapath.endpoints().count)"] })
  }
}
