import Logging
import Synchronization
import TesseraCore
import TesseraRuntime

/// Orchestrates endpoints: the blocking create → identity → first
/// regeneration flow (docs/architecture.md §1), label changes, policy changes, deletes and
/// restore after a restart.
///
/// Every state change goes through ``EndpointRegistry`` (one lock, the
/// ``EndpointStateMachine`` inside). Each transition yields an
/// ``EndpointAction``, and every action runs in ``perform(_:on:failure:)``,
/// outside the lock, so the flow reads from the state machine:
///
/// ```
/// create ─▶ labelsChanged ─allocateIdentity─▶ identityResolved ─regenerate─▶ Regenerator
///   Regenerator ─▶ regenerationStarted … regenerationFinished ─resumeWaiters─▶ create returns
///                                      └─ regenerationFailed ─failWaiters─▶ retry with backoff
/// delete ─▶ deleteRequested ─failWaiters─▶ … deleteFinished ─cleanUp─▶ forgotten
/// ```
///
/// The steps live in `EndpointManager+Create`, `+Labels`, `+Regenerate`,
/// `+Delete` and `+Restore`.
public final class EndpointManager: Sendable {
  public struct Configuration: Sendable {
    /// Upper bound for a synchronous create or label update.
    public var requestTimeout: Duration
    /// First wait before retrying a failed regeneration; it doubles per consecutive failure.
    public var regenerationRetryDelay: Duration
    /// Longest wait between retries of a failed regeneration.
    public var regenerationRetryMaximum: Duration

    public init(
      requestTimeout: Duration = .seconds(30), regenerationRetryDelay: Duration = .seconds(1),
      regenerationRetryMaximum: Duration = .seconds(30)
    ) {
      self.requestTimeout = requestTimeout
      self.regenerationRetryDelay = regenerationRetryDelay
      self.regenerationRetryMaximum = regenerationRetryMaximum
    }

    public static let defaults = Configuration()
  }

  public let registry = EndpointRegistry()
  public let waiters = RegenerationWaiters()
  /// Signalled whenever an endpoint's realised identity or addresses may have changed.
  public let endpointsChanged = Wakeup()
  let configuration: Configuration
  let metadata: MetadataResolver
  let identities: any IdentityAllocating
  let policy: any PolicyComputing
  let datapath: any DatapathRealizing
  let store: EndpointStateStore?
  let logger: Logger
  private let regeneratorBox = RegeneratorBox()
  let policyCache = PolicyCache()
  private let remoteNamedPorts = Mutex<(@Sendable () -> [NumericIdentity: Set<NamedPort>])?>(nil)
  /// Holds back a realisation that makes addresses carry a new identity until peers' policy reflects it.
  let ordering = PolicyOrdering()
  /// The ipcache entries of the CIDRs the rules name; nil without a datapath that takes them.
  let cidrIPCache: CIDRIPCache?

  /// Lets the regenerator call back into the manager without a retain cycle at init.
  private final class RegeneratorBox: Sendable {
    let regenerator = Mutex<Regenerator?>(nil)
  }

  public init(
    configuration: Configuration = .defaults, metadata: MetadataResolver,
    identities: any IdentityAllocating,
    policy: any PolicyComputing, datapath: any DatapathRealizing, store: EndpointStateStore?,
    logger: Logger = Logger(label: "tessera.endpoint")
  ) {
    self.cidrIPCache = (datapath as? any CIDRIPCacheWriting).map {
      CIDRIPCache(datapath: $0, logger: logger)
    }
    self.configuration = configuration
    self.metadata = metadata
    self.identities = identities
    self.policy = policy
    self.datapath = datapath
    self.store = store
    self.logger = logger
    let regenerator = Regenerator(
      configuration: .init(
        initialRetryDelay: configuration.regenerationRetryDelay,
        maximumRetryDelay: configuration.regenerationRetryMaximum),
      pass: { [weak self] id in await self?.regenerate(endpointID: id) },
      retry: { [weak self] id in await self?.triggerRegeneration(endpointIDs: [id]) })
    regeneratorBox.regenerator.withLock { $0 = regenerator }
  }

  /// Runs regeneration passes and their retries; the daemon runs it as a service.
  public var regenerator: Regenerator { regeneratorBox.regenerator.withLock { $0! } }

  // MARK: - Actions

  /// Runs the action the state machine chose for a transition of `endpoint`
  /// (its state as the transition left it).
  ///
  /// - Parameter failure: for `.failWaiters`, what the waiters are told.
  /// - Throws: only for `.allocateIdentity`: the identity resolution's error.
  func perform(_ action: EndpointAction, on endpoint: Endpoint, failure: EndpointError? = nil)
    async throws(EndpointError)
  {
    switch action {
    case .none:
      return
    case .allocateIdentity:
      try await resolveIdentity(of: endpoint)
    case .regenerate:
      regenerator.trigger(endpoint.id)
    case .resumeWaiters:
      waiters.resume(endpointID: endpoint.id, realizedGeneration: endpoint.realizedGeneration)
    case .failWaiters:
      waiters.fail(
        endpointID: endpoint.id,
        error: failure
          ?? EndpointError(code: .notFound, message: "endpoint \(endpoint.id) is being deleted"))
    case .cleanUp:
      if let removed = registry.remove(id: endpoint.id), let ports = removed.namedPorts,
        !ports.isEmpty
      {
        await namedPortsChanged(Set(ports.map(\.name)))
      }
      waiters.forget(endpointID: endpoint.id)
      ordering.forget(endpointID: endpoint.id)
      regenerator.forget(endpoint.id)
      store?.delete(id: endpoint.id)
      endpointsChanged.signal()
      EndpointMetrics.endpoints.record(registry.count)
    }
  }

  /// Feeds `event` to the endpoint's state machine; returns the action and the endpoint as left.
  func transition(id: UInt64, _ event: EndpointEvent) throws(EndpointError) -> (
    EndpointAction, Endpoint
  ) {
    try registry.update(id: id) { (endpoint) throws(EndpointError) -> (EndpointAction, Endpoint) in
      (try endpoint.stateMachine.handle(event), endpoint)
    }
  }

  /// Addresses of endpoints whose identity is in force in the datapath, with their named
  /// ports, for other nodes' ipcaches.
  public func realizedAddresses() -> [IPPrefix: (
    endpointID: UInt64, identity: SecurityIdentity, namedPorts: [NamedPort]
  )] {
    var addresses:
      [IPPrefix: (endpointID: UInt64, identity: SecurityIdentity, namedPorts: [NamedPort])] = [:]
    for endpoint in registry.all()
    where endpoint.identity != .unknown && endpoint.policyRevision > 0
      && endpoint.state != .disconnecting
    {
      let identity = SecurityIdentity(id: endpoint.identity, labels: endpoint.identityLabels)
      for ip in endpoint.ips { addresses[ip] = (endpoint.id, identity, endpoint.namedPorts ?? []) }
    }
    return addresses
  }

  /// Where other nodes' named ports come from (the cluster ipcache); egress rows on a named
  /// port resolve through them too.
  public func setRemoteNamedPorts(
    _ source: @escaping @Sendable () -> [NumericIdentity: Set<NamedPort>]
  ) {
    remoteNamedPorts.withLock { $0 = source }
  }

  /// The named ports endpoints declare, by identity: this node's and, with a cluster
  /// ipcache, other nodes'.
  func namedPortsByIdentity() -> [NumericIdentity: Set<NamedPort>] {
    let local = registry.namedPortsByIdentity()
    guard let remote = remoteNamedPorts.withLock({ $0 }) else { return local }
    return local.merging(remote()) { $0.union($1) }
  }

  /// Saves the endpoint once it holds an identity reference (so a restart can
  /// release or keep it) and after each realised regeneration. Labels alone are
  /// not saved: until their identity is set, the saved labels and identity agree.
  func persist(_ id: UInt64) {
    guard let store, let endpoint = registry.endpoint(id: id) else { return }
    do { try store.save(endpoint) } catch {
      logger.error(
        "cannot persist endpoint state", metadata: ["endpoint.id": "\(id)", "error": "\(error)"])
    }
  }
}
