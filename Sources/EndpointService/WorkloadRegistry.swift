import Foundation
import Synchronization
import TesseraCore
import TesseraRuntime

/// Where an endpoint's workload labels come from. Kept behind a protocol so a
/// Kubernetes API source can replace the built-in registry.
public protocol MetadataSource: Sendable {
  /// The workload's labels, waiting until `deadline` for it to appear.
  ///
  /// Returns nil when the workload is still unknown at the deadline (an
  /// unknown workload is not an error: its endpoint gets the request's labels).
  /// Throws for a transient failure of the source; the resolver retries those.
  func labels(namespace: String, podName: String, waitUntil deadline: ContinuousClock.Instant)
    async throws -> LabelSet?
  /// The namespace's own labels (empty for a namespace without any).
  func namespaceLabels(_ namespace: String) async throws -> LabelSet
}

extension MetadataSource {
  public func namespaceLabels(_ namespace: String) async throws -> LabelSet { .empty }
}

/// A workload: namespace/pod and its labels.
public struct Workload: Sendable, Codable, Hashable {
  public var namespace: String
  public var podName: String
  public var labels: LabelSet

  public init(namespace: String, podName: String, labels: LabelSet) {
    self.namespace = namespace
    self.podName = podName
    self.labels = labels
  }
}

/// The built-in metadata source: namespace/pod → labels, set through the CLI,
/// persisted in the state directory. Waiters are woken when a workload is set
/// (push, no polling).
public final class WorkloadRegistry: MetadataSource {
  private struct Key: Hashable, Codable {
    var namespace: String
    var podName: String
  }
  private struct State {
    var workloads: [Key: Workload] = [:]
    var namespaces: [String: LabelSet] = [:]
    var waiters: [Key: [UUID: CheckedContinuation<Void, Never>]] = [:]
  }

  /// A namespace's labels as persisted.
  private struct NamespaceRecord: Codable {
    var name: String
    var labels: LabelSet
  }

  private let state: Mutex<State>
  private let file: String?
  private let namespacesFile: String?

  /// - Parameter file: JSON file to persist workloads to, with namespaces in
  ///   `namespaces.json` beside it; nil keeps both in memory.
  public init(file: String?) throws {
    self.file = file
    namespacesFile = file.map {
      URL(fileURLWithPath: $0).deletingLastPathComponent().appendingPathComponent("namespaces.json")
        .path
    }
    var initial = State()
    if let file, FileManager.default.fileExists(atPath: file) {
      let workloads = try JSONDecoder().decode(
        [Workload].self, from: Data(contentsOf: URL(fileURLWithPath: file)))
      for workload in workloads {
        initial.workloads[Key(namespace: workload.namespace, podName: workload.podName)] = workload
      }
    }
    if let namespacesFile, FileManager.default.fileExists(atPath: namespacesFile) {
      let records = try JSONDecoder().decode(
        [NamespaceRecord].self, from: Data(contentsOf: URL(fileURLWithPath: namespacesFile)))
      for record in records { initial.namespaces[record.name] = record.labels }
    }
    state = Mutex(initial)
  }

  // MARK: Namespaces

  public func namespaceLabels(_ namespace: String) async throws -> LabelSet {
    state.withLock { $0.namespaces[namespace] ?? .empty }
  }

  /// Sets a namespace's labels (replacing what it had).
  public func setNamespace(_ name: String, labels: LabelSet) throws {
    let snapshot = state.withLock { state in
      state.namespaces[name] = labels
      return state.namespaces
    }
    try persistNamespaces(snapshot)
  }

  @discardableResult
  public func deleteNamespace(_ name: String) throws -> Bool {
    let (existed, snapshot) = state.withLock { state in
      (state.namespaces.removeValue(forKey: name) != nil, state.namespaces)
    }
    if existed { try persistNamespaces(snapshot) }
    return existed
  }

  /// Every namespace with labels, sorted by name.
  public func namespaces() -> [(name: String, labels: LabelSet)] {
    state.withLock { $0.namespaces.sorted { $0.key < $1.key }.map { ($0.key, $0.value) } }
  }

  private func persistNamespaces(_ namespaces: [String: LabelSet]) throws {
    guard let namespacesFile else { return }
    let records = namespaces.sorted { $0.key < $1.key }.map {
      NamespaceRecord(name: $0.key, labels: $0.value)
    }
    try JSONEncoder().encode(records).write(
      to: URL(fileURLWithPath: namespacesFile), options: .atomic)
  }

  // MARK: Workloads

  public func set(_ workload: Workload) throws {
    let key = Key(namespace: workload.namespace, podName: workload.podName)
    let (waiters, snapshot) = state.withLock { state in
      state.workloads[key] = workload
      return (
        state.waiters.removeValue(forKey: key).map { Array($0.values) } ?? [],
        Array(state.workloads.values)
      )
    }
    try persist(snapshot)
    for waiter in waiters { waiter.resume() }
  }

  @discardableResult
  public func delete(namespace: String, podName: String) throws -> Bool {
    let (existed, snapshot) = state.withLock { state in
      (
        state.workloads.removeValue(forKey: Key(namespace: namespace, podName: podName)) != nil,
        Array(state.workloads.values)
      )
    }
    if existed { try persist(snapshot) }
    return existed
  }

  public func workload(namespace: String, podName: String) -> Workload? {
    state.withLock { $0.workloads[Key(namespace: namespace, podName: podName)] }
  }

  public func all() -> [Workload] {
    state.withLock {
      $0.workloads.values.sorted { ($0.namespace, $0.podName) < ($1.namespace, $1.podName) }
    }
  }

  public func labels(
    namespace: String, podName: String, waitUntil deadline: ContinuousClock.Instant
  ) async throws -> LabelSet? {
    let key = Key(namespace: namespace, podName: podName)
    if let found = state.withLock({ $0.workloads[key] }) { return found.labels }
    guard deadline > .now else { return nil }
    let token = UUID()
    // Whichever comes first, the workload being set or the deadline, resumes the waiter once.
    await withTaskGroup(of: Void.self) { group in
      group.addTask {
        await withCheckedContinuation { continuation in
          let alreadyThere = self.state.withLock { state -> Bool in
            if state.workloads[key] != nil { return true }
            state.waiters[key, default: [:]][token] = continuation
            return false
          }
          if alreadyThere { continuation.resume() }
        }
      }
      group.addTask {
        try? await Task.sleep(until: deadline, clock: .continuous)
        let waiter = self.state.withLock { $0.waiters[key]?.removeValue(forKey: token) }
        waiter?.resume()
      }
      await group.next()
      group.cancelAll()
    }
    return state.withLock { $0.workloads[key]?.labels }
  }

  private func persist(_ workloads: [Workload]) throws {
    guard let file else { return }
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
    let sorted = workloads.sorted { ($0.namespace, $0.podName) < ($1.namespace, $1.podName) }
    try encoder.encode(sorted).write(to: URL(fileURLWithPath: file), options: .atomic)
  }
}

/// docs/architecture.md §1 step 2: fetch the workload's labels, retrying transient failures
/// of the source with backoff until the first success or the deadline.
public struct MetadataResolver: Sendable {
  public var source: any MetadataSource
  /// How long to wait for an unknown workload to appear (0: don't wait).
  public var workloadWait: Duration

  public init(source: any MetadataSource, workloadWait: Duration = .zero) {
    self.source = source
    self.workloadWait = workloadWait
  }

  /// The workload's labels and its namespace's labels (as
  /// `k8s:io.cilium.k8s.namespace.labels.<key>=<value>`).
  public func resolve(namespace: String, podName: String, deadline: ContinuousClock.Instant)
    async throws(EndpointError) -> LabelSet
  {
    let namespaceLabels: LabelSet
    do {
      namespaceLabels = Self.propagated(
        Self.named(try await source.namespaceLabels(namespace), namespace))
    } catch {
      throw EndpointError(
        code: .upstreamUnavailable, message: "labels of namespace \(namespace) unavailable",
        cause: error)
    }
    return try await workloadLabels(namespace: namespace, podName: podName, deadline: deadline)
      .merging(namespaceLabels)
  }

  /// The label Kubernetes puts on every namespace, its name.
  static let namespaceNameLabel = "kubernetes.io/metadata.name"

  /// A namespace's labels as Kubernetes keeps them: `kubernetes.io/metadata.name` is its
  /// name, whatever was stored (the API server sets it and refuses another value), so a
  /// policy naming it (`NotIn [kube-system]`) sees every pod's namespace.
  static func named(_ labels: LabelSet, _ namespace: String) -> LabelSet {
    guard !namespace.isEmpty else { return labels }
    return labels.merging(
      LabelSet(
        validated: [
          Label(source: Label.Source.kubernetes, key: namespaceNameLabel, value: namespace)
        ]))
  }

  /// A namespace's labels as its pods carry them.
  static func propagated(_ labels: LabelSet) -> LabelSet {
    LabelSet(
      validated: labels.labels.map {
        Label(
          source: Label.Source.kubernetes, key: Endpoint.namespaceLabelsPrefix + $0.key,
          value: $0.value)
      })
  }

  private func workloadLabels(namespace: String, podName: String, deadline: ContinuousClock.Instant)
    async throws(EndpointError) -> LabelSet
  {
    guard !podName.isEmpty else { return .empty }
    let waitUntil = min(deadline, .now + workloadWait)
    var backoff = Backoff(initial: .milliseconds(5), maximum: .milliseconds(500))
    while true {
      do {
        return try await source.labels(namespace: namespace, podName: podName, waitUntil: waitUntil)
          ?? .empty
      } catch {
        guard ContinuousClock.now + backoff.delay < deadline, !Task.isCancelled else {
          throw EndpointError(
            code: .upstreamUnavailable, message: "metadata for \(namespace)/\(podName) unavailable",
            cause: error)
        }
        try? await backoff.sleep()
      }
    }
  }
}
