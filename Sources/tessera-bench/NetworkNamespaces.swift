import Foundation
import Glibc
import Synchronization

/// A system tool that failed, with what it printed on stderr.
struct ToolError: Error, CustomStringConvertible {
  var command: [String]
  var status: Int32
  var stderr: String
  var description: String { "\(command.joined(separator: " ")) exited \(status): \(stderr)" }
}

/// The absolute path of a system tool, or nil when it is not installed.
func toolPath(_ name: String) -> String? {
  ["/usr/sbin", "/usr/bin", "/sbin", "/bin"].map { "\($0)/\(name)" }.first {
    FileManager.default.isExecutableFile(atPath: $0)
  }
}

/// A network namespace created by the benchmark (`ip netns add`), removed by `destroy()`.
struct NetworkNamespace: Sendable {
  let name: String
  var path: String { "/var/run/netns/\(name)" }

  static let ip = toolPath("ip") ?? "/usr/sbin/ip"
  static let nsenter = toolPath("nsenter") ?? "/usr/bin/nsenter"

  static func create(_ name: String) throws -> NetworkNamespace {
    _ = try? execute([ip, "netns", "del", name], keepErrors: true).checkedOutput()  // a leftover from an interrupted run
    try execute([ip, "netns", "add", name], keepErrors: true).checkedOutput()
    let namespace = NetworkNamespace(name: name)
    try namespace.ip("link", "set", "lo", "up")
    return namespace
  }

  func destroy() {
    _ = try? execute([Self.ip, "netns", "del", name], keepErrors: true).checkedOutput()
  }

  func ip(_ arguments: String...) throws {
    try execute([Self.ip, "-n", name] + arguments, keepErrors: true).checkedOutput()
  }

  /// The command line that runs `command` in this namespace only: `nsenter --net`
  /// leaves the mount namespace alone (`ip netns exec` remounts /sys and would
  /// hide bpffs from a datapath started through it).
  func exec(_ command: [String]) -> [String] { [Self.nsenter, "--net=\(path)", "--"] + command }

  func setIPv4Forwarding() throws {
    try execute(
      exec(["/bin/sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"]), keepErrors: true
    ).checkedOutput()
  }

  /// Runs `body` on a new thread that has joined this namespace; sockets made
  /// there belong to the namespace for their whole life, wherever they are used.
  func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) throws -> T {
    let outcome = Mutex<Result<T, any Error>?>(nil)
    let done = DispatchSemaphore(value: 0)
    let path = self.path
    let thread = Thread {
      defer { done.signal() }
      let result: Result<T, any Error> = Result {
        try Self.enter(path)
        return try body()
      }
      outcome.withLock { $0 = result }
    }
    thread.start()
    done.wait()
    return try outcome.withLock { $0! }.get()
  }

  private typealias SetNamespace = @convention(c) (Int32, Int32) -> Int32
  /// Glibc's `setns`, which the Swift Glibc module does not import.
  private static let setns: SetNamespace? = dlsym(nil, "setns").map {
    unsafeBitCast($0, to: SetNamespace.self)
  }
  private static let newNetworkNamespace: Int32 = 0x4000_0000  // CLONE_NEWNET

  private static func enter(_ path: String) throws {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { throw SocketError(operation: "open \(path)", code: errno) }
    defer { close(fd) }
    guard let setns, setns(fd, newNetworkNamespace) == 0 else {
      throw SocketError(operation: "setns \(path)", code: errno)
    }
  }
}

struct SocketError: Error, CustomStringConvertible {
  var operation: String
  var code: Int32
  var description: String { "\(operation): \(String(cString: strerror(code)))" }
}

/// Blocking IPv4 TCP, as small as a latency probe needs.
enum TCPProbe {
  static func address(_ ip: String, _ port: UInt16) -> sockaddr_in {
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = port.bigEndian
    inet_pton(AF_INET, ip, &address.sin_addr)
    return address
  }

  /// A listening socket on 0.0.0.0:port, in the calling thread's namespace.
  static func listen(port: UInt16) throws -> Int32 {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw SocketError(operation: "socket", code: errno) }
    var one: Int32 = 1
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
    var address = address("0.0.0.0", port)
    let bound = withUnsafePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
        bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
      }
    }
    guard bound == 0, Glibc.listen(fd, 4096) == 0 else {
      let code = errno
      close(fd)
      throw SocketError(operation: "bind/listen :\(port)", code: code)
    }
    return fd
  }

  /// Accepts and closes connections until the listener is shut down.
  static func acceptForever(_ listener: Int32) {
    while true {
      let connection = accept(listener, nil, nil)
      if connection >= 0 {
        close(connection)
      } else if errno != EINTR && errno != ECONNABORTED {
        return
      }
    }
  }

  /// One connect in the calling thread's namespace: microseconds from
  /// `connect` to established, or the errno it failed with. Closes with a
  /// reset so no TIME_WAIT piles up over thousands of probes.
  static func connectTime(to target: sockaddr_in, timeoutMilliseconds: Int) -> Result<
    Double, SocketError
  > {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return .failure(SocketError(operation: "socket", code: errno)) }
    defer { close(fd) }
    var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
    var timeout = timeval(
      tv_sec: timeoutMilliseconds / 1000, tv_usec: (timeoutMilliseconds % 1000) * 1000)
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    let start = monotonicNanoseconds()
    let result = connect(fd, to: target)
    let elapsed = Double(monotonicNanoseconds() - start) / 1000
    return result == 0
      ? .success(elapsed) : .failure(SocketError(operation: "connect", code: errno))
  }

  /// `connect(2)` to an IPv4 address; 0 or -1 with errno set.
  private static func connect(_ fd: Int32, to target: sockaddr_in) -> Int32 {
    var target = target
    return withUnsafePointer(to: &target) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
        Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
      }
    }
  }

  static func monotonicNanoseconds() -> UInt64 {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
  }

  /// A plain HTTP/1.0 GET, for scraping a daemon's /metrics inside a namespace.
  static func httpGet(_ ip: String, _ port: UInt16, _ path: String) throws -> String {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw SocketError(operation: "socket", code: errno) }
    defer { close(fd) }
    guard connect(fd, to: address(ip, port)) == 0 else {
      throw SocketError(operation: "connect \(ip):\(port)", code: errno)
    }
    let request = Array("GET \(path) HTTP/1.0\r\nHost: \(ip)\r\n\r\n".utf8)
    guard write(fd, request, request.count) == request.count else {
      throw SocketError(operation: "write", code: errno)
    }
    var response: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 65536)
    while true {
      let count = read(fd, &buffer, buffer.count)
      if count <= 0 { break }
      response += buffer[0..<count]
    }
    return String(decoding: response, as: UTF8.self)
  }
}

/// Two veth paths from a client namespace through a router namespace to a
/// server namespace. The policy path (client eth0 → router → server eth0) is
/// the one a design filters; the reference path (eth1 → eth1) is the same
/// kind of hop with no policy on it, so the difference of the two is the
/// policy's cost and nothing else.
struct ComparisonTopology: Sendable {
  let router: NetworkNamespace
  let client: NetworkNamespace
  let server: NetworkNamespace

  static let policyClient = "10.91.1.2"
  static let referenceClient = "10.91.2.2"
  static let policyServer = "10.91.3.2"
  static let referenceServer = "10.91.4.2"
  /// Router-side interface names (namespaces keep them from clashing with the host's).
  static let policyClientLink = "vc1"
  static let policyServerLink = "vs1"

  static func create(tag: String) throws -> ComparisonTopology {
    var created: [NetworkNamespace] = []
    do {
      for role in ["r", "c", "s"] { created.append(try .create("tsrb-\(tag)-\(role)")) }
    } catch {
      created.forEach { $0.destroy() }
      throw error
    }
    let topology = ComparisonTopology(router: created[0], client: created[1], server: created[2])
    do {
      try topology.link(topology.client, router: "vc1", pod: "eth0", subnet: 1)
      try topology.link(topology.client, router: "vc2", pod: "eth1", subnet: 2)
      try topology.link(topology.server, router: "vs1", pod: "eth0", subnet: 3)
      try topology.link(topology.server, router: "vs2", pod: "eth1", subnet: 4)
      try topology.client.ip("route", "add", "10.91.3.0/24", "via", "10.91.1.1", "dev", "eth0")
      try topology.client.ip("route", "add", "10.91.4.0/24", "via", "10.91.2.1", "dev", "eth1")
      try topology.server.ip("route", "add", "10.91.1.0/24", "via", "10.91.3.1", "dev", "eth0")
      try topology.server.ip("route", "add", "10.91.2.0/24", "via", "10.91.4.1", "dev", "eth1")
      try topology.router.setIPv4Forwarding()
    } catch {
      topology.destroy()
      throw error
    }
    return topology
  }

  private func link(
    _ pod: NetworkNamespace, router routerName: String, pod podName: String, subnet: Int
  ) throws {
    try router.ip(
      "link", "add", routerName, "type", "veth", "peer", "name", podName, "netns", pod.name)
    try router.ip("addr", "add", "10.91.\(subnet).1/24", "dev", routerName)
    try router.ip("link", "set", routerName, "up")
    try pod.ip("addr", "add", "10.91.\(subnet).2/24", "dev", podName)
    try pod.ip("link", "set", podName, "up")
  }

  func destroy() {
    for namespace in [client, server, router] { namespace.destroy() }
  }
}

/// A listener in a namespace that accepts and closes connections on its own thread.
struct AcceptingServer {
  private let listener: Int32

  init(in namespace: NetworkNamespace, port: UInt16) throws {
    let listener = try namespace.run { try TCPProbe.listen(port: port) }
    self.listener = listener
    Thread { TCPProbe.acceptForever(listener) }.start()
  }

  /// Ends the accept loop and closes the socket.
  func stop() {
    shutdown(listener, Int32(SHUT_RDWR))
    close(listener)
  }
}

/// Connect latency through the policy path against the reference path,
/// alternated in blocks so that drift of a shared VM cancels out.
struct PairedConnectTimes {
  /// Median of all policy-path and reference-path connects (µs).
  var policyMedian: Double
  var referenceMedian: Double
  /// Median over block pairs of (policy block median − reference block median) (µs).
  var overhead: Double
  var connections: Int

  static func measure(
    topology: ComparisonTopology, port: UInt16, pairs: Int, block: Duration = .milliseconds(100)
  ) throws -> PairedConnectTimes {
    let server = try AcceptingServer(in: topology.server, port: port)
    defer { server.stop() }
    let blockNanoseconds =
      UInt64(block.components.seconds) * 1_000_000_000
      + UInt64(block.components.attoseconds / 1_000_000_000)
    return try topology.client.run {
      let policy = TCPProbe.address(ComparisonTopology.policyServer, port)
      let reference = TCPProbe.address(ComparisonTopology.referenceServer, port)
      func runBlock(_ target: sockaddr_in) throws -> [Double] {
        var times: [Double] = []
        let end = TCPProbe.monotonicNanoseconds() + blockNanoseconds
        repeat {
          switch TCPProbe.connectTime(to: target, timeoutMilliseconds: 1000) {
          case .success(let microseconds): times.append(microseconds)
          case .failure(let error): throw error
          }
        } while TCPProbe.monotonicNanoseconds() < end
        return times
      }
      _ = try runBlock(policy)  // warm caches and conntrack paths
      _ = try runBlock(reference)
      var allPolicy: [Double] = []
      var allReference: [Double] = []
      var differences: [Double] = []
      for pair in 0..<pairs {
        // Alternate which path goes first so neither always follows the other.
        let first = pair % 2 == 0 ? policy : reference
        let second = pair % 2 == 0 ? reference : policy
        let a = try runBlock(first)
        let b = try runBlock(second)
        let (policyBlock, referenceBlock) = pair % 2 == 0 ? (a, b) : (b, a)
        allPolicy += policyBlock
        allReference += referenceBlock
        differences.append(median(policyBlock) - median(referenceBlock))
      }
      return PairedConnectTimes(
        policyMedian: median(allPolicy), referenceMedian: median(allReference),
        overhead: median(differences),
        connections: allPolicy.count + allReference.count)
    }
  }

  /// Checks that the design under test filters: the allowed port connects on
  /// the policy path, a port that nothing listens on is refused on the
  /// reference path (reachable) but silently dropped on the policy path.
  static func verifyEnforcement(
    topology: ComparisonTopology, allowedPort: UInt16, deniedPort: UInt16, design: String
  ) throws {
    let server = try AcceptingServer(in: topology.server, port: allowedPort)
    defer { server.stop() }
    try topology.client.run {
      if case .failure(let error) = TCPProbe.connectTime(
        to: TCPProbe.address(ComparisonTopology.policyServer, allowedPort),
        timeoutMilliseconds: 1000)
      {
        throw BenchError("\(design): allowed connection failed: \(error)")
      }
      let refused = TCPProbe.connectTime(
        to: TCPProbe.address(ComparisonTopology.referenceServer, deniedPort),
        timeoutMilliseconds: 1000)
      guard case .failure(let error) = refused, error.code == ECONNREFUSED else {
        throw BenchError("\(design): reference path to a closed port was not refused (\(refused))")
      }
      let dropped = TCPProbe.connectTime(
        to: TCPProbe.address(ComparisonTopology.policyServer, deniedPort), timeoutMilliseconds: 300)
      guard case .failure(let error) = dropped, error.code != ECONNREFUSED else {
        throw BenchError(
          "\(design): a denied port reached the server (\(dropped)); the policy is not enforced")
      }
    }
  }
}

func median(_ values: [Double]) -> Double {
  guard !values.isEmpty else { return .nan }
  let sorted = values.sorted()
  return sorted.count % 2 == 1
    ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
}
