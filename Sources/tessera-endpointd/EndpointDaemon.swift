import ArgumentParser
import ClusterIPCache
import EndpointService
import Logging
import ServiceLifecycle
import TesseraEtcd
import TesseraProto
import TesseraRuntime

/// `tessera-endpointd`: endpoints on this node; the CNI plugin's entry point.
@main
struct EndpointDaemon: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "tessera-endpointd",
    abstract: "Tessera endpoint service: create → identity → first regeneration, blocking until policy is in force.")

  @OptionGroup var options: DaemonOptions

  @Option(help: "Seconds a synchronous create or label update may take before it fails (and is cleaned up).")
  var requestTimeout: Double = 30

  @Option(help: "Milliseconds to wait for an unknown workload to appear in the workload registry.")
  var workloadWaitMs: Int = 0

  @Option(help: "etcd:URL[,URL...] shared by the cluster's nodes: publish this node's endpoint addresses and learn the others' (the ipcache).")
  var clusterStore: String?

  @Option(help: "etcd key prefix of the cluster ipcache.")
  var ipcachePrefix: String = "/tessera/ipcache"

  @OptionGroup var etcd: EtcdOptions

  func validate() throws {
    if let clusterStore {
      do { _ = try etcd.configuration(store: clusterStore) } catch { throw ValidationError("--cluster-store: \(error.message)") }
    }
    guard requestTimeout > 0, requestTimeout <= 600 else { throw ValidationError("--request-timeout must be in (0, 600]") }
    guard workloadWaitMs >= 0 else { throw ValidationError("--workload-wait-ms must be >= 0") }
  }

  func run() async throws {
    options.bootstrapLogging()
    let logger = Logger(label: "tessera.endpointd")
    let run = options.runDirectory
    let identity = try GRPCClientService(socketPath: run.socketPath(for: .identity))
    let policy = try GRPCClientService(socketPath: run.socketPath(for: .policy))
    let datapath = try GRPCClientService(socketPath: run.socketPath(for: .datapath))
    let workloads = try WorkloadRegistry(file: "\(options.stateDir)/workloads.json")
    let policyClient = PolicyServiceClient(wrapping: policy.client)
    let manager = EndpointManager(
      configuration: .init(requestTimeout: .milliseconds(Int64(requestTimeout * 1000))),
      metadata: MetadataResolver(source: workloads, workloadWait: .milliseconds(workloadWaitMs)),
      identities: IdentityServiceClient(wrapping: identity.client),
      policy: policyClient,
      datapath: DatapathServiceClient(wrapping: datapath.client),
      store: try EndpointStateStore(directory: "\(options.stateDir)/endpoints"),
      logger: logger)
    let health = HealthService(serviceNames: [Tessera_Endpoint_V1_EndpointService.descriptor.fullyQualifiedService])
    // Restore before serving so the CNI plugin never sees a half-restored node.
    let restorer = EndpointRestorer(manager: manager, health: health, policy: policyClient, logger: logger)
    var clusterServices: [any Service] = []
    if let clusterStore {
      let client = try EtcdClient(configuration: try etcd.configuration(store: clusterStore), logger: Logger(label: "tessera.etcd"))
      let ipcache = ClusterIPCache(
        configuration: .init(prefix: ipcachePrefix, nodeName: options.nodeName, leaseTTLSeconds: etcd.etcdLeaseTTL),
        client: client, datapath: DatapathServiceClient(wrapping: datapath.client), logger: Logger(label: "tessera.ipcache"),
        localChanged: manager.endpointsChanged,
        localAddresses: { Set(manager.registry.all().flatMap(\.ips)) },
        policyOrdering: { identities, deadline in try await manager.waitForPolicyOrdering(admitting: identities, deadline: deadline) }
      ) { manager.realizedAddresses() }
      clusterServices = [LoopService { try await client.runConnections() }, LoopService { try await ipcache.run() }]
    }
    try await Daemon(service: .endpoint, runDirectory: run, logger: logger).run(
      rpcServices: [EndpointServiceHandler(manager: manager, workloads: workloads, logger: logger)],
      health: health,
      backgroundServices: [identity, policy, datapath, restorer, manager.regenerator] + clusterServices + (try options.metricsServices(logger: logger)),
      backend: { "state: \(options.stateDir)/endpoints" + (clusterStore.map { ", cluster ipcache: \($0)" } ?? "") },
      details: { ["endpoints": "\(manager.registry.all().count)", "node": options.nodeName] },
      markServing: false)
  }
}

/// The datapath client writes the cluster ipcache's remote entries.
extension DatapathServiceClient: ClusterIPCacheDatapath {}
