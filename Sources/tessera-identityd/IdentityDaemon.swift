import ArgumentParser
import IdentityService
import Logging
import Metrics
import ServiceLifecycle
import TesseraCore
import TesseraEtcd
import TesseraProto
import TesseraRuntime

/// `tessera-identityd`: label set ↔ cluster-unique numeric identity.
@main
struct IdentityDaemon: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "tessera-identityd",
    abstract: "Tessera identity service: label sets to cluster-unique numeric identities.")

  @OptionGroup var options: DaemonOptions

  @Option(
    help:
      "Identity store: sqlite:PATH (default: sqlite:<state-dir>/identity.db) or etcd:URL[,URL...] shared by many nodes."
  )
  var identityStore: String?

  @Option(help: "etcd key prefix; every node of one cluster uses the same.")
  var etcdPrefix: String = "/tessera/identities"

  @OptionGroup var etcd: EtcdOptions

  @Option(help: "Seconds an unreferenced identity is kept before it is deleted.")
  var gracePeriod: Int = 60

  @Option(help: "Seconds between garbage-collection rounds.")
  var gcInterval: Int = 15

  @Option(help: "Cluster ID (0-255); selects the identity range.")
  var clusterID: UInt32 = 0

  @Option(
    name: .customLong("label-filter"),
    help:
      "Extra label-filter rule, +PATTERN keeps, -PATTERN drops (repeatable, checked before the defaults)."
  )
  var labelFilterRules: [String] = []

  @Option(
    help:
      "local: announce new identities to the policy service on this node's socket before AllocateIdentity returns (an allocation fails while it is down); none: no policy service beside this one (a Kubernetes Deployment): policy services follow WatchIdentities."
  )
  var policyService: String = "local"

  func validate() throws {
    guard ["local", "none"].contains(policyService) else {
      throw ValidationError("--policy-service must be local or none")
    }
    guard gracePeriod >= 0, gcInterval > 0 else {
      throw ValidationError("--grace-period must be >= 0 and --gc-interval > 0")
    }
    guard clusterID <= 255 else { throw ValidationError("--cluster-id must be 0...255") }
    if let identityStore {
      do {
        _ = try IdentityStoreSpec(parsing: identityStore)
      } catch {
        throw ValidationError(error.message)
      }
    }
    if options.nodeName.contains("/") { throw ValidationError("--node-name must not contain '/'") }
    for rule in labelFilterRules { _ = try LabelFilter.Rule(parsing: rule) }
  }

  func run() async throws {
    options.bootstrapLogging()
    let logger = Logger(label: "tessera.identityd")
    let run = options.runDirectory
    let spec =
      try identityStore.map { try IdentityStoreSpec(parsing: $0) }
      ?? .sqlite(path: "\(options.stateDir)/identity.db")
    let store: any IdentityStore
    var storeServices: [any Service] = []
    switch spec {
    case .sqlite(let path):
      store = try SQLiteIdentityStore(path: path, clusterID: clusterID)
    case .etcd(let endpoints):
      let client = try EtcdClient(
        configuration: EtcdConfiguration(endpoints: endpoints, tls: etcd.tls),
        logger: Logger(label: "tessera.etcd"))
      store = try EtcdIdentityStore(
        client: client,
        configuration: .init(
          prefix: etcdPrefix, leaseTTLSeconds: etcd.etcdLeaseTTL, clusterID: clusterID,
          nodeStatePath: "\(options.stateDir)/identity-node-references.db",
          localNode: options.nodeName),
        logger: logger)
      storeServices.append(LoopService { try await client.runConnections() })
    }

    let policy =
      policyService == "local"
      ? try GRPCClientService(socketPath: run.socketPath(for: .policy)) : nil
    var filter = LabelFilter.defaults
    filter.rules.insert(
      contentsOf: try labelFilterRules.map { try LabelFilter.Rule(parsing: $0) }, at: 0)
    let allocator = IdentityAllocator(
      configuration: .init(
        nodeName: options.nodeName, labelFilter: filter,
        gracePeriodMilliseconds: Int64(gracePeriod) * 1000),
      store: store,
      changeSink: policy.map { PolicyServiceSink(client: $0.client) as any IdentityChangeSink }
        ?? NoPolicyServiceSink(),
      logger: logger)
    let garbageCollector = IdentityGarbageCollector(
      allocator: allocator, interval: .seconds(gcInterval), logger: logger)
    let health = HealthService(serviceNames: [
      Tessera_Identity_V1_IdentityService.descriptor.fullyQualifiedService
    ])
    try await Daemon(
      service: .identity, runDirectory: run, logger: logger, tcpListener: try options.tcpListener()
    ).run(
      rpcServices: [IdentityServiceHandler(allocator: allocator, logger: logger)],
      health: health,
      backgroundServices: storeServices + (policy.map { [$0 as any Service] } ?? []) + [
        garbageCollector, LoopService { try await allocator.followStore() },
      ]
        + (try options.metricsServices(for: .identity, logger: logger, sampleEvery: .seconds(15)) {
          if let all = try? await allocator.identities() {
            Gauge(label: "tessera_identities").record(all.count)
          }
        }),
      backend: { store.backendDescription },
      details: { ["node": options.nodeName, "clusterID": "\(clusterID)"] })
  }
}
