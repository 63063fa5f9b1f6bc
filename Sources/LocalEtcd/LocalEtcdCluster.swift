import Foundation

#if canImport(Glibc)
  import Glibc
#endif

/// A real etcd cluster (Debian's `etcd-server`) on loopback ports, in a
/// temporary directory that is removed with it. Members can be stopped,
/// killed and started again to test outages.
public final class LocalEtcdCluster: @unchecked Sendable {
  public struct Member {
    public let name: String
    public let clientPort: Int
    public let peerPort: Int
    public let secure: Bool
    public var clientURL: String { "\(secure ? "https" : "http")://127.0.0.1:\(clientPort)" }
    var peerURL: String { "http://127.0.0.1:\(peerPort)" }
  }

  public static let executable: String? = {
    for dir in ["/usr/bin", "/usr/local/bin", "/usr/sbin"]
    where FileManager.default.isExecutableFile(atPath: dir + "/etcd") {
      return dir + "/etcd"
    }
    return nil
  }()

  /// Why etcd tests cannot run here, printed so a skip is never silent.
  public static var skipReason: String? {
    guard executable == nil else { return nil }
    print("skipping: etcd not installed (run scripts/install-deps.sh: etcd-server)")
    return "etcd not installed (run scripts/install-deps.sh: etcd-server)"
  }

  /// PEM files of a TLS cluster: clients must present `clientCertificate` signed by `caFile`.
  public struct TLSFiles: Sendable {
    public let caFile: String
    public let clientCertificate: String
    public let clientKey: String
    let serverCertificate: String
    let serverKey: String
  }

  public let members: [Member]
  public let directory: String
  public let tls: TLSFiles?
  private let lock = NSLock()
  private var processes: [String: Process] = [:]

  /// The members' client URLs, comma-separated (`etcd:` store syntax without the scheme prefix).
  public var endpoints: String { members.map(\.clientURL).joined(separator: ",") }

  /// - Parameter tls: serve clients over TLS and require client certificates (made with openssl).
  public init(members count: Int, tls: Bool = false) throws {
    directory =
      FileManager.default.temporaryDirectory.appendingPathComponent(
        "tsr-etcd-\(UUID().uuidString.prefix(8))"
      ).path
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    self.tls = tls ? try Self.makeCertificates(in: directory) : nil
    var ports = try Self.freePorts(count * 2)
    members = (0..<count).map { index in
      Member(
        name: "m\(index)", clientPort: ports.removeFirst(), peerPort: ports.removeFirst(),
        secure: tls)
    }
    for member in members { try start(member.name) }
    try waitHealthy(members.map(\.name))
  }

  deinit { shutdown() }

  /// Starts (or restarts, keeping its data) one member.
  public func start(_ name: String) throws {
    guard let executable = Self.executable, let member = members.first(where: { $0.name == name })
    else { return }
    let cluster = members.map { "\($0.name)=\($0.peerURL)" }.joined(separator: ",")
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = [
      "--name", member.name, "--data-dir", "\(directory)/\(member.name)",
      "--listen-client-urls", member.clientURL, "--advertise-client-urls", member.clientURL,
      "--listen-peer-urls", member.peerURL, "--initial-advertise-peer-urls", member.peerURL,
      "--initial-cluster", cluster, "--initial-cluster-state", "new", "--initial-cluster-token",
      "tessera-test",
      // Fast elections: tests kill members on purpose.
      "--heartbeat-interval", "50", "--election-timeout", "500",
    ]
    if let tls {
      process.arguments! += [
        "--cert-file", tls.serverCertificate, "--key-file", tls.serverKey, "--trusted-ca-file",
        tls.caFile, "--client-cert-auth",
      ]
    }
    let log =
      FileHandle(forWritingAtPath: "\(directory)/\(member.name).log")
      ?? {
        _ = FileManager.default.createFile(atPath: "\(directory)/\(member.name).log", contents: nil)
        return FileHandle(forWritingAtPath: "\(directory)/\(member.name).log")!
      }()
    log.seekToEndOfFile()
    process.standardOutput = log
    process.standardError = log
    try process.run()
    lock.withLock { processes[name] = process }
  }

  /// The process id of a running member (for CPU accounting).
  public func processID(_ name: String) -> Int32? {
    lock.withLock { processes[name]?.processIdentifier }
  }

  /// SIGKILL: the member vanishes mid-request.
  public func kill(_ name: String) { signal(name, SIGKILL) }

  /// SIGTERM and wait.
  public func stop(_ name: String) { signal(name, SIGTERM) }

  public func stopAll() { for member in members { stop(member.name) } }

  public func startAll() throws {
    for member in members { try start(member.name) }
    try waitHealthy(members.map(\.name))
  }

  private func signal(_ name: String, _ signal: Int32) {
    guard let process = lock.withLock({ processes.removeValue(forKey: name) }), process.isRunning
    else { return }
    Glibc.kill(process.processIdentifier, signal)
    process.waitUntilExit()
  }

  public func shutdown() {
    for member in members { kill(member.name) }
    try? FileManager.default.removeItem(atPath: directory)
  }

  /// Waits until every named member answers its health endpoint.
  public func waitHealthy(_ names: [String], timeout: TimeInterval = 20) throws {
    let deadline = Date().addingTimeInterval(timeout)
    for name in names {
      guard let member = members.first(where: { $0.name == name }) else { continue }
      while true {
        if let tls {
          if Self.healthyOverTLS(member, tls) { break }
        } else if Self.healthy(member) {
          break
        }
        if Date() > deadline {
          let log = (try? String(contentsOfFile: "\(directory)/\(name).log", encoding: .utf8)) ?? ""
          throw LocalEtcdClusterError(
            "etcd member \(name) not healthy after \(timeout) s:\n\(log.suffix(2000))")
        }
        Thread.sleep(forTimeInterval: 0.05)
      }
    }
  }

  /// Whether the plain-HTTP member at 127.0.0.1:`clientPort` has a leader (`GET /health`);
  /// for members started elsewhere, such as `tessera node up --cluster`'s.
  public static func isHealthy(clientPort: Int) -> Bool {
    healthy(Member(name: "", clientPort: clientPort, peerPort: 0, secure: false))
  }

  /// `GET /health` over a plain socket: etcd answers `{"health":"true"}` once it has a leader.
  private static func healthy(_ member: Member) -> Bool {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = in_port_t(UInt16(member.clientPort).bigEndian)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    var timeout = timeval(tv_sec: 1, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    let connected = withUnsafePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
        connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
      }
    }
    guard connected == 0 else { return false }
    let request = "GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n"
    _ = request.withCString { send(fd, $0, strlen($0), 0) }
    var buffer = [UInt8](repeating: 0, count: 4096)
    var response = ""
    while true {
      let count = recv(fd, &buffer, buffer.count, 0)
      if count <= 0 { break }
      response += String(decoding: buffer[0..<count], as: UTF8.self)
    }
    return response.contains("\"health\":\"true\"")
  }

  private static func healthyOverTLS(_ member: Member, _ tls: TLSFiles) -> Bool {
    let status = try? run(
      "/usr/bin/etcdctl",
      [
        "--endpoints", member.clientURL, "--cacert", tls.caFile, "--cert", tls.clientCertificate,
        "--key", tls.clientKey, "endpoint", "health",
      ],
      environment: ["ETCDCTL_API": "3"])
    return status == 0
  }

  /// A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by the CA.
  static func makeCertificates(in directory: String) throws -> TLSFiles {
    let ca = "\(directory)/ca"
    func openssl(_ arguments: [String]) throws {
      guard try run("/usr/bin/openssl", arguments) == 0 else {
        throw LocalEtcdClusterError("openssl \(arguments.joined(separator: " ")) failed")
      }
    }
    try openssl([
      "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=tessera-test-ca",
      "-keyout", "\(ca).key", "-out", "\(ca).pem",
    ])
    for (name, extensions) in [
      ("server", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth"),
      ("client", "extendedKeyUsage=clientAuth"),
    ] {
      let path = "\(directory)/\(name)"
      try openssl([
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=tessera-test-\(name)", "-keyout",
        "\(path).key", "-out", "\(path).csr",
      ])
      try extensions.write(toFile: "\(path).ext", atomically: true, encoding: .utf8)
      try openssl([
        "x509", "-req", "-in", "\(path).csr", "-CA", "\(ca).pem", "-CAkey", "\(ca).key",
        "-CAcreateserial", "-days", "2",
        "-extfile", "\(path).ext", "-out", "\(path).pem",
      ])
    }
    return TLSFiles(
      caFile: "\(ca).pem", clientCertificate: "\(directory)/client.pem",
      clientKey: "\(directory)/client.key",
      serverCertificate: "\(directory)/server.pem", serverKey: "\(directory)/server.key")
  }

  private static func run(
    _ executable: String, _ arguments: [String], environment: [String: String] = [:]
  ) throws -> Int32 {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    if !environment.isEmpty {
      process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
    }
    process.standardOutput = FileHandle.nullDevice
    process.standardError = FileHandle.nullDevice
    try process.run()
    process.waitUntilExit()
    return process.terminationStatus
  }

  /// Whether every port in `ports` can be bound on 127.0.0.1 right now.
  public static func bindable(_ ports: Range<Int>) throws -> Bool {
    var sockets: [Int32] = []
    defer { sockets.forEach { close($0) } }
    for port in ports {
      guard let (fd, _) = bindLoopback(port: port) else { return false }
      sockets.append(fd)
    }
    return true
  }

  /// Ports the kernel says are free right now (bound to port 0, then released).
  public static func freePorts(_ count: Int) throws -> [Int] {
    var sockets: [Int32] = []
    defer { sockets.forEach { close($0) } }
    return try (0..<count).map { _ in
      guard let (fd, port) = bindLoopback(port: 0) else {
        throw LocalEtcdClusterError("no free port")
      }
      sockets.append(fd)
      return port
    }
  }

  /// A TCP socket bound to 127.0.0.1:port (0: any free port) and the port it
  /// got, or nil when the port is taken. The caller closes the socket.
  private static func bindLoopback(port: Int) -> (Int32, Int)? {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return nil }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = in_port_t(UInt16(port).bigEndian)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let result = withUnsafeMutablePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer -> Int32 in
        guard bind(fd, pointer, length) == 0 else { return -1 }
        return getsockname(fd, pointer, &length)
      }
    }
    guard result == 0 else {
      close(fd)
      return nil
    }
    return (fd, Int(UInt16(bigEndian: address.sin_port)))
  }
}

public struct LocalEtcdClusterError: Error, CustomStringConvertible {
  public let description: String
  public init(_ description: String) { self.description = description }
}
