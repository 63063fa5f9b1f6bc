import ArgumentParser
import ClusterIPCache
import ClusterMetadata
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
    abstract:
      "Tessera endpoint service: create → identity → first regeneration, blocking until policy is in force."
  )

  @OptionGroup var options: DaemonOptions

  @Option(
    help:
      "Seconds a synchronous create or label update may take before it fails (and is cleaned up).")
  var requestTimeout: Double = 30

  @Option(help: "Milliseconds to wait for an unknown workload to appear in the workload registry.")
  var workloadWaitMs: Int = 0

  @Option(
    help:
      "etcd:URL[,URL...] shared by the cluster's nodes: publish this node's endpoint addresses and learn the others' (the ipcache); namespace and workload labels are kept there, once for the cluster."
  )
  var clusterStore: String?

  @Option(help: "etcd key prefix of the cluster ipcache.")
  var ipcachePrefix: String = "/tessera/ipcache"

  @Option(help: "etcd key prefix of the cluster's namespace and workload labels.")
  var metadataPrefix: String = "/tessera/metadata"

  @Option(
    help:
      "The identity service: unix:PATH (default: this node's socket), HOST:PORT[,HOST:PORT...] or dns:NAME:PORT of replicas (mutual TLS with the --tls-* files)."
  )
  var identityAddress: String?

  @Option(help: "The policy service, in the same forms as --identity-address.")
  var policyAddress: String?

  @Option(
    help:
      "Seconds the node keeps its reference to an identity after its last pod of it went, where the identity service binds references to the node's lease (replicas on other machines): a pod of that label set created meanwhile costs no call. 0 gives it back at once."
  )
  var identityReleaseDelay: Double = 30

  @OptionGroup var etcd: EtcdOptions

  /// Where an upstream service is: the flag's address, else this node's socket.
  func upstream(_ flag: String?, _ service: TesseraService) throws -> GRPCClientService {
    guard let flag else {
      return try GRPCClientService(socketPath: options.runDirectory.socketPath(for: service))
    }
    return try GRPCClientService(address: try ServiceAddress(parsing: flag), tls: options.mutualTLS)
  }

  func validate() throws {
    if let clusterStore {
      do { _ = try etcd.configuration(store: clusterStore) } catch {
        throw ValidationError("--cluster-store: \(error.message)")
      }
    }
    for (flag, value) in [
      ("--identity-address", identityAddress), ("--policy-address", policyAddress),
    ] {
      guard let value else { continue }
      do {
        if !(try ServiceAddress(parsing: value)).isLocal, options.mutualTLS == nil {
          throw ValidationError(
            "\(flag) \(value) is TCP: give --tls-cert-file, --tls-key-file and --tls-ca-file")
        }
      } catch let error as ServiceAddressError {
        throw ValidationError("\(flag) \(error)")
      }
    }
    guard requestTimeout > 0, requestTimeout <= 600 else {
      throw ValidationError("--request-timeout must be in (0, 600]")
    }
    guard identityReleaseDelay >= 0, identityReleaseDelay <= 3600 else {
      throw ValidationError("--identity-release-delay must be in [0, 3600]")
    }
    guard workloadWaitMs >= 0 else { throw ValidationError("--workload-wait-ms must be >= 0") }
  }

  func run() async throws {
    options.bootstrapLogging()
    let logger = Logger(label: "tessera.endpointd")
    let run = options.runDirectory
    let identity = try upstream(identityAddress, .identity)
    let policy = try upstream(policyAddress, .policy)
    let datapath = try GRPCClientService(socketPath: run.socketPath(for: .datapath))
    let workloads = try WorkloadRegistry(file: "\(options.stateDir)/workloads.json")
    let policyClient = PolicyServiceClient(wrapping: policy.client)
    let identityReferences = NodeReferenceKeeper(
      wrapping: IdentityServiceClient(wrapping: identity.client),
      configuration: .init(releaseDelay: .milliseconds(Int64(identityReleaseDelay * 1000))),
      logger: Logger(label: "tessera.endpointd.references"))
    let manager = EndpointManager(
      configuration: .init(requestTimeout: .milliseconds(Int64(requestTimeout * 1000))),
      metadata: MetadataResolver(source: workloads, workloadWait: .milliseconds(workloadWaitMs)),
      identities: identityReferences,
      policy: policyClient,
      datapath: DatapathServiceClient(wrapping: datapath.client),
      store: try EndpointStateStore(directory: "\(options.stateDir)/endpoints"),
      logger: logger)
    let health = HealthService(serviceNames: [
      Tessera_Endpoint_V1_EndpointService.descriptor.fullyQualifiedService
    ])
    // Restore before serving so the CNI plugin never sees a half-restored node.
    let deletionQueue = DeletionQueue(directory: run.deletionQueuePath)
    let restorer = EndpointRestorer(
      manager: manager, health: health, policy: policyClient, deletionQueue: deletionQueue,
      logger: logger)
    var clusterServices: [any Service] = []
    var metadata: (any MetadataStore)? = nil
    if let clusterStore {
      let client = try EtcdClient(
        configuration: try etcd.configuration(store: clusterStore),
        logger: Logger(label: "tessera.etcd"))
      let ipcache = ClusterIPCache(
        configuration: .init(
          prefix: ipcachePrefix, nodeName: options.nodeName, leaseTTLSeconds: etcd.etcdLeaseTTL),
        client: client, datapath: DatapathServiceClient(wrapping: datapath.client),
        logger: Logger(label: "tessera.ipcache"),
        localChanged: manager.endpointsChanged,
        localAddresses: { Set(manager.registry.all().flatMap(\.ips)) },
        policyOrdering: { identities, deadline in
          try await manager.waitForPolicyOrdering(admitting: identities, deadline: deadline)
        },
        namedPortsChanged: { names in await manager.namedPortsChanged(names) }
      ) {
        manager.realizedAddresses().mapValues {
          ClusterIPCache.LocalEndpoint(
            identity: $0.identity, namedPorts: $0.namedPorts, holder: $0.endpointID)
        }
      }
      manager.setRemoteNamedPorts { ipcache.namedPortsByIdentity() }
      let clusterMetadata = ClusterMetadataStore(
        configuration: .init(prefix: metadataPrefix), client: client, registry: workloads,
        logger: Logger(label: "tessera.metadata")
      ) { namespace in await manager.namespaceChanged(namespace) }
      metadata = clusterMetadata
      clusterServices = [
        LoopService { try await client.runConnections() }, LoopService { try await ipcache.run() },
        LoopService { try await clusterMetadata.run() },
      ]
    }
    try await Daemon(
      service: .endpoint, runDirectory: run, logger: logger, tcpListener: try options.tcpListener()
    ).run(
      rpcServices: [
        EndpointServiceHandler(
          manager: manager, workloads: workloads, metadata: metadata,
          isServing: { health.isServing }, deletionQueue: deletionQueue, logger: logger)
      ],
      health: health,
      backgroundServices: [
        identity, policy, datapath, restorer, identityReferences, manager.regenerator,
        DeletionQueueDrainer(
          queue: deletionQueue, manager: manager, isServing: { health.isServing }, logger: logger),
      ]
        + clusterServices + (try options.metricsServices(for: .endpoint, logger: logger)),
      backend: {
        "state: \(options.stateDir)/endpoints"
          + (clusterStore.map { ", cluster ipcache: \($0)" } ?? "")
      },
      details: {
        [
          "endpoints": "\(manager.registry.all().count)", "node": options.nodeName,
          "regenerationFailing": "\(manager.regenerator.retryCount)",
        ]
      },
      markServing: false)
  }
}

/// The datapath client writes the cluster ipcache's remote entries.
extension DatapathServiceClient: ClusterIPCacheDatapath {}
