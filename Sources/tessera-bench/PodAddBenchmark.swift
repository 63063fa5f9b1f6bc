import Foundation

/// Pod ADD as a container runtime sees it: the CNI plugins exec'd the way
/// libcni runs them (environment, network config on stdin, the previous
/// plugin's result injected as `prevResult`, DEL in reverse order), on real
/// network namespaces with veths made by containernetworking-plugins' `ptp`
/// (host-local IPAM), against a real node with the eBPF datapath. The time of an
/// ADD is the first plugin's exec to the last plugin's exit.
struct PodAddBenchmark {
  /// The three ways a pod gets its network.
  enum Variant: String, CaseIterable {
    /// `ptp` alone: the floor, a pod network with no policy.
    case ptp
    /// `ptp` then `tessera-cni` chained.
    case chain
    /// `tessera-cni` as the main plugin (it makes the veth and delegates IPAM).
    case main
  }

  /// ADD times of one variant at one live-endpoint count.
  struct Times {
    var samples: [Variant: Samples] = [:]
  }

  static let pluginDirectory = "/usr/lib/cni"
  /// ADD+DEL per variant per live-endpoint count.
  var iterations = 30
  /// The tessera-cni binary (absolute path).
  let tesseraCNI: String
  /// The node's endpoint socket.
  let socketPath: String
  /// host-local's data and the cached results.
  let stateDirectory: String
  /// Labels of every pod: an identity the node knows, selected by a rule.
  let labels = ["app=svc-1"]
  let network = "tsr-bench-add"
  let subnet = "10.182.0.0/16"

  /// Why the measurement cannot run here, or nil.
  static func missing(tesseraCNI: String) -> String? {
    for plugin in ["ptp", "host-local"]
    where !FileManager.default.isExecutableFile(atPath: pluginDirectory + "/" + plugin) {
      return
        "\(pluginDirectory)/\(plugin) missing (scripts/install-deps.sh installs containernetworking-plugins)"
    }
    if !FileManager.default.isExecutableFile(atPath: tesseraCNI) {
      return "\(tesseraCNI) not built (make -C Sources/tessera-cni)"
    }
    return nil
  }

  /// ADD+DEL `iterations` times per variant, variants interleaved so that drift of
  /// a shared machine falls on all three alike; one unmeasured round first.
  func measure(tag: String) throws -> Times {
    var times = Times()
    for round in 0...iterations {
      for variant in Variant.allCases {
        let pod = Pod(
          container: "\(network)-\(tag)-\(variant.rawValue)-\(round)",
          namespace: "tsrb-add-\(getpid())-\(variant.rawValue)")
        let elapsed = try addAndDelete(variant, pod)
        if round > 0 { times.samples[variant, default: Samples()].add(elapsed) }
      }
    }
    return times
  }

  /// One pod's identity towards the plugins.
  struct Pod {
    var container: String
    var namespace: String
  }

  /// ADD (timed), then DEL in reverse order; the namespace and with it the veth go
  /// whatever happened.
  private func addAndDelete(_ variant: Variant, _ pod: Pod) throws -> Duration {
    let namespace = try NetworkNamespace.create(pod.namespace)
    defer { namespace.destroy() }
    let clock = ContinuousClock()
    switch variant {
    case .ptp:
      defer { _ = try? run(plugin: "ptp", "DEL", pod, config: ptpConfig()) }
      let start = clock.now
      try run(plugin: "ptp", "ADD", pod, config: ptpConfig())
      return clock.now - start
    case .chain:
      let start = clock.now
      let previous = try run(plugin: "ptp", "ADD", pod, config: ptpConfig())
      var result: String?
      defer {  // DEL in reverse order, each attempted
        _ = try? run(
          plugin: "tessera-cni", "DEL", pod, config: tesseraConfig(previous: result ?? previous))
        _ = try? run(plugin: "ptp", "DEL", pod, config: ptpConfig())
      }
      result = try run(plugin: "tessera-cni", "ADD", pod, config: tesseraConfig(previous: previous))
      return clock.now - start
    case .main:
      defer { _ = try? run(plugin: "tessera-cni", "DEL", pod, config: mainConfig()) }
      let start = clock.now
      try run(plugin: "tessera-cni", "ADD", pod, config: mainConfig())
      return clock.now - start
    }
  }

  /// Runs one plugin as libcni does; returns its stdout (the result), throws with
  /// its output when it fails.
  @discardableResult
  private func run(plugin: String, _ command: String, _ pod: Pod, config: String) throws -> String {
    let path = plugin == "tessera-cni" ? tesseraCNI : Self.pluginDirectory + "/" + plugin
    let environment = [
      "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
      "CNI_COMMAND": command, "CNI_CONTAINERID": pod.container,
      "CNI_NETNS": "/var/run/netns/\(pod.namespace)", "CNI_IFNAME": "eth0",
      "CNI_PATH": Self.pluginDirectory + ":" + (tesseraCNI as NSString).deletingLastPathComponent,
      "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=\(pod.container)",
    ]
    let execution = try execute(
      [path], environment: environment, stdin: Data(config.utf8), keepErrors: true)
    let output = String(decoding: execution.output, as: UTF8.self)
    guard execution.status == 0 else {
      throw BenchError(
        "\(plugin) \(command) for \(pod.container) exited \(execution.status): \(output)")
    }
    return output
  }

  private var ipam: String {
    """
    {"type":"host-local","ranges":[[{"subnet":"\(subnet)"}]],"dataDir":"\(stateDirectory)/ipam"}
    """
  }

  private var labelsJSON: String { "[" + labels.map { "\"\($0)\"" }.joined(separator: ",") + "]" }

  private func ptpConfig() -> String {
    """
    {"cniVersion":"1.0.0","name":"\(network)","type":"ptp","ipMasq":false,"ipam":\(ipam)}
    """
  }

  private func tesseraConfig(previous: String) -> String {
    """
    {"cniVersion":"1.0.0","name":"\(network)","type":"tessera-cni","socketPath":"\(socketPath)","args":{"cni":{"labels":\(labelsJSON)}},"prevResult":\(previous)}
    """
  }

  private func mainConfig() -> String {
    """
    {"cniVersion":"1.0.0","name":"\(network)","type":"tessera-cni","socketPath":"\(socketPath)","args":{"cni":{"labels":\(labelsJSON)}},"ipam":\(ipam)}
    """
  }

  /// The table's rows for the counts measured: p50/p99 per variant and count, the
  /// overheads against `ptp` alone per count, and the target rows at the worse count.
  static func rows(_ measured: [(live: Int, times: Times)]) -> [Row] {
    var rows: [Row] = []
    var chainOverheads: [(Int, Double)] = []
    var mainOverheads: [(Int, Double)] = []
    let names: [Variant: String] = [
      .ptp: "`ptp` alone", .chain: "`ptp` + `tessera-cni` chained",
      .main: "`tessera-cni` as the main plugin",
    ]
    for (live, times) in measured {
      let ptp = times.samples[.ptp] ?? Samples()
      for variant in Variant.allCases {
        let samples = times.samples[variant] ?? Samples()
        let floor = variant == .ptp ? "(floor)" : "`ptp` alone \(format(ptp.p50)) ms"
        for (name, value) in [("p50", samples.p50), ("p99", samples.p99)] {
          rows.append(
            Row(
              key: "pod_add_\(variant.rawValue)_\(name)_ms_at_\(live)",
              label: "pod ADD, \(names[variant]!), \(live) live endpoints, \(name)", value: value,
              unit: "ms",
              floor: variant == .ptp || name == "p50"
                ? floor : "`ptp` alone p99 \(format(ptp.p99)) ms",
              target: ""))
        }
      }
      let chain = ((times.samples[.chain]?.p50 ?? .nan) - ptp.p50) / ptp.p50 * 100
      let main = ((times.samples[.main]?.p50 ?? .nan) - ptp.p50) / ptp.p50 * 100
      chainOverheads.append((live, chain))
      mainOverheads.append((live, main))
      rows.append(
        Row(
          key: "pod_add_overhead_pct_at_\(live)",
          label: "pod ADD overhead of the chain over `ptp` alone (p50), \(live) live endpoints",
          value: chain, unit: "%", floor: "", target: ""))
      rows.append(
        Row(
          key: "main_plugin_add_overhead_pct_at_\(live)",
          label:
            "pod ADD overhead of the main plugin over `ptp` alone (p50), \(live) live endpoints",
          value: main, unit: "%", floor: "", target: ""))
    }
    // The target rows take the worse count (NaN, not measured, counts as worst).
    func worst(_ overheads: [(Int, Double)]) -> (Int, Double)? {
      overheads.first { $0.1.isNaN } ?? overheads.max { $0.1 < $1.1 }
    }
    if let (live, value) = worst(chainOverheads) {
      rows.append(
        Row(
          key: "pod_add_overhead_pct",
          label: "pod ADD overhead of the chain over `ptp` alone (p50), worse count (\(live) live)",
          value: value, unit: "%", floor: "", target: "≤ 5 (issue)", bound: .atMost(5)))
    }
    if let (live, value) = worst(mainOverheads) {
      rows.append(
        Row(
          key: "main_plugin_add_overhead_pct",
          label:
            "pod ADD overhead of the main plugin over `ptp` alone (p50), worse count (\(live) live)",
          value: value, unit: "%", floor: "", target: "≤ 5 (issue)", bound: .atMost(5)))
    }
    return rows
  }
}

/// The host side of a node's live pods: one veth per live endpoint, as a node with
/// that many pods has (ptp's gateway address on each host end, both ends up, so
/// each has its link-local address and routes). The peers share one namespace.
/// Pod ADD at N live endpoints is measured with N of them: what a node does per
/// ADD that grows with its devices (listing addresses or links) shows there.
struct LiveDevices {
  let namespace: NetworkNamespace
  let names: [String]

  static func create(count: Int) throws -> LiveDevices {
    let tag = getpid() % 10_000
    let namespace = try NetworkNamespace.create("tsrb-live-\(tag)")
    let names = (0..<count).map { "tl\(tag)x\($0)" }
    do {
      var host = ""
      for (i, name) in names.enumerated() {
        host += "link add \(name) type veth peer name p\(i) netns \(namespace.name)\n"
        host += "addr add 10.184.0.1/32 dev \(name)\n"
        host += "link set \(name) up\n"
      }
      try execute([NetworkNamespace.ip, "-batch", "-"], stdin: Data(host.utf8), keepErrors: true)
        .checkedOutput()
      let peers = (0..<count).map { "link set p\($0) up\n" }.joined()
      try execute(
        [NetworkNamespace.ip, "-n", namespace.name, "-batch", "-"], stdin: Data(peers.utf8),
        keepErrors: true
      ).checkedOutput()
    } catch {
      namespace.destroy()
      throw error
    }
    return LiveDevices(namespace: namespace, names: names)
  }

  /// Deletes the peers' namespace, and with each peer its host end.
  func destroy() { namespace.destroy() }
}
