import ArgumentParser
import GRPCCore
import Logging
import Metrics
import PolicyService
import ServiceLifecycle
import TesseraCore
import TesseraEtcd
import TesseraProto
import TesseraRuntime

/// `tessera-policyd`: rule repository and SelectorCache.
@main
struct PolicyDaemon: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "tessera-policyd",
    abstract: "Tessera policy service: rule repository, SelectorCache and per-identity policy.")

  @OptionGroup var options: DaemonOptions

  @Option(help: "Policy database (default: <state-dir>/policy.db).")
  var database: String?

  @Option(
    help:
      "etcd:URL[,URL...]: keep the rule repository in etcd, shared by every policy-service replica (one import reaches every node); --database is then unused."
  )
  var policyStore: String?

  @Option(help: "etcd key prefix of the shared rule repository.")
  var policyPrefix: String = "/tessera/policies"

  @Option(
    help: ArgumentHelp(
      "always: the node reaches its own pods whatever their ingress rules (Kubernetes' rule: kubelet's probes come from it); policy: the node is judged like any peer (fromEntities: [host]).",
      valueName: "always|policy"))
  var allowLocalhost: String = LocalhostIngress.always.rawValue

  @OptionGroup var etcd: EtcdOptions

  @Option(
    help:
      "The identity service to follow: unix:PATH (default: this node's socket), HOST:PORT[,HOST:PORT...] or dns:NAME:PORT of replicas (mutual TLS with the --tls-* files)."
  )
  var identityAddress: String?

  func validate() throws {
    guard LocalhostIngress(rawValue: allowLocalhost) != nil else {
      throw ValidationError("--allow-localhost must be always or policy")
    }
    if let identityAddress {
      do {
        if !(try ServiceAddress(parsing: identityAddress)).isLocal, options.mutualTLS == nil {
          throw ValidationError(
            "--identity-address \(identityAddress) is TCP: give --tls-cert-file, --tls-key-file and --tls-ca-file"
          )
        }
      } catch let error as ServiceAddressError {
        throw ValidationError("--identity-address \(error)")
      }
    }
    if let policyStore {
      do { _ = try etcd.configuration(store: policyStore) } catch {
        throw ValidationError("--policy-store: \(error.message)")
      }
    }
  }

  func run() async throws {
    options.bootstrapLogging()
    let logger = Logger(label: "tessera.policyd")
    let run = options.runDirectory
    let databasePath = database ?? "\(options.stateDir)/policy.db"
    let engine = try PolicyEngine(
      database: policyStore == nil ? try PolicyDatabase(path: databasePath) : nil,
      localhostIngress: LocalhostIngress(rawValue: allowLocalhost) ?? .always, logger: logger)
    let events = PolicyEvents()
    let clusterClient = try policyStore.map {
      try EtcdClient(
        configuration: try etcd.configuration(store: $0), logger: Logger(label: "tessera.etcd"))
    }
    let cluster = clusterClient.map {
      ClusterPolicyRepository(
        configuration: .init(prefix: policyPrefix), client: $0, engine: engine, events: events,
        logger: logger)
    }
    var clusterServices: [any Service] = []
    if let clusterClient, let cluster {
      clusterServices = [
        LoopService { try await clusterClient.runConnections() },
        LoopService { try await cluster.run() },
      ]
    }
    // Policy-computing RPCs answer UNAVAILABLE until the first identity sync.
    let readiness = PolicyReadiness(synced: false)
    let identity =
      try identityAddress.map {
        try GRPCClientService(address: try ServiceAddress(parsing: $0), tls: options.mutualTLS)
      }
      ?? GRPCClientService(socketPath: run.socketPath(for: .identity))
    let health = HealthService(serviceNames: [
      Tessera_Policy_V1_PolicyService.descriptor.fullyQualifiedService
    ])
    let handler = PolicyServiceHandler(
      engine: engine, events: events, readiness: readiness, cluster: cluster, logger: logger)
    // The SelectorCache must know every existing identity, and a shared repository its
    // rules, before endpoints ask for policy.
    let follower = IdentityFollower(client: identity.client, handler: handler, logger: logger)
    let identitySync = LoopService {
      await follower.run {
        // An endpoint computed against no rules would be realised without the policy that selects it.
        while let cluster, !cluster.loaded, !Task.isCancelled {
          try? await Task.sleep(for: .milliseconds(10))
        }
        readiness.markSynced()
        health.setServing(true)
      }
    }
    try await Daemon(
      service: .policy, runDirectory: run, logger: logger, tcpListener: try options.tcpListener()
    ).run(
      rpcServices: [handler],
      health: health,
      backgroundServices: [
        identity, identitySync,
        CIDRIdentityCollector(engine: engine, events: events, logger: logger),
      ] + clusterServices
        + (try options.metricsServices(for: .policy, logger: logger) {
          Gauge(label: "tessera_policy_revision").record(engine.revision)
          Gauge(label: "tessera_policies").record(engine.policies().count)
          Gauge(label: "tessera_selectorcache_selectors").record(engine.selectors().count)
        }),
      backend: { policyStore.map { "etcd:\($0) \(policyPrefix)" } ?? "sqlite:\(databasePath)" },
      details: { ["revision": "\(engine.revision)", "policies": "\(engine.policies().count)"] },
      markServing: false)
  }
}
