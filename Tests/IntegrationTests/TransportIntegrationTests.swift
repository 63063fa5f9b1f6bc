import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import TesseraCore
import TesseraProto
import TesseraRuntime
import Testing

/// Certificates made with openssl for one test: a cluster CA, node certificates
/// naming their node in a SAN, one without a SAN, and one from a stranger's CA.
struct TestPKI {
  let directory: String

  init() throws {
    directory =
      FileManager.default.temporaryDirectory.appendingPathComponent(
        "tsr-pki-\(UUID().uuidString.prefix(8))"
      ).path
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    try openssl([
      "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days",
      "2",
      "-subj", "/CN=tessera-test-ca", "-keyout", "ca.key", "-out", "ca.pem",
    ])
    try openssl([
      "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days",
      "2",
      "-subj", "/CN=stranger-ca", "-keyout", "stranger-ca.key", "-out", "stranger-ca.pem",
    ])
    for (name, san, ca) in [
      ("identity", "DNS:identity.tessera", "ca"), ("node-a", "DNS:node-a", "ca"),
      ("node-b", "DNS:node-b", "ca"),
      ("nosan", nil, "ca"), ("forged-a", "DNS:node-a", "stranger-ca"),
    ] as [(String, String?, String)] {
      try openssl([
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj",
        "/CN=\(name)",
        "-keyout", "\(name).key", "-out", "\(name).csr",
      ])
      var sign = [
        "x509", "-req", "-in", "\(name).csr", "-CA", "\(ca).pem", "-CAkey", "\(ca).key",
        "-CAcreateserial",
        "-days", "2", "-out", "\(name).pem",
      ]
      if let san {
        try "subjectAltName=\(san)\n".write(
          toFile: "\(directory)/\(name).ext", atomically: true, encoding: .utf8)
        sign += ["-extfile", "\(name).ext"]
      }
      try openssl(sign)
    }
  }

  func tls(_ name: String) -> MutualTLS {
    MutualTLS(
      certificateFile: "\(directory)/\(name).pem", keyFile: "\(directory)/\(name).key",
      trustRootsFile: "\(directory)/ca.pem")
  }

  private func openssl(_ arguments: [String]) throws {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
    process.arguments = arguments
    process.currentDirectoryURL = URL(fileURLWithPath: directory)
    process.standardOutput = FileHandle.nullDevice
    process.standardError = FileHandle.nullDevice
    try process.run()
    process.waitUntilExit()
    try #require(process.terminationStatus == 0, "openssl \(arguments.joined(separator: " "))")
  }

  static var skipReason: String? {
    FileManager.default.isExecutableFile(atPath: "/usr/bin/openssl")
      ? nil : "skipping: /usr/bin/openssl is not installed"
  }
}

/// A free loopback TCP port (bound, read, released).
func freeLoopbackPort() throws -> Int {
  let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
  defer { close(fd) }
  var address = sockaddr_in()
  address.sin_family = sa_family_t(AF_INET)
  address.sin_addr.s_addr = inet_addr("127.0.0.1")
  var length = socklen_t(MemoryLayout<sockaddr_in>.size)
  _ = withUnsafePointer(to: &address) {
    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
  }
  _ = withUnsafeMutablePointer(to: &address) {
    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
  }
  return Int(UInt16(bigEndian: address.sin_port))
}

@Suite(
  "Cluster transport: TCP with mutual TLS, nodes named by their certificates", .serialized,
  .enabled(if: TesseraNode.skipReason == nil && TestPKI.skipReason == nil))
struct TransportIntegrationTests {
  /// Calls `body` with an identity-service client over TCP presenting `tls` (nil: no certificate).
  func withIdentityClient<T: Sendable>(
    port: Int, tls: MutualTLS?, trustRoots: String,
    _ body: (Tessera_Identity_V1_IdentityService.Client<HTTP2ClientTransport.Posix>) async throws ->
      T
  ) async throws -> T {
    let client: GRPCClient<HTTP2ClientTransport.Posix>
    if let tls {
      client = try GRPCClientService(address: .addresses([("127.0.0.1", port)]), tls: tls).client
    } else {
      client = GRPCClient(
        transport: try .http2NIOPosix(
          target: .ipv4(host: "127.0.0.1", port: port),
          transportSecurity: .tls {
            $0.trustRoots = .certificates([.file(path: trustRoots, format: .pem)])
            $0.serverCertificateVerification = .noHostnameVerification
          }))
    }
    return try await withThrowingTaskGroup(of: Void.self) { group in
      group.addTask { try await client.runConnections() }
      defer { client.beginGracefulShutdown() }
      return try await body(Tessera_Identity_V1_IdentityService.Client(wrapping: client))
    }
  }

  @Test(
    "identityd on TCP: a node acts for itself only; no certificate, a stranger's CA or a certificate without a name is refused; the Unix socket is unchanged"
  )
  func identityOverMutualTLS() async throws {
    let pki = try TestPKI()
    let node = try TesseraNode()
    var processes: [Process] = []
    defer {
      for process in processes {
        process.terminate()
        process.waitUntilExit()
      }
      try? FileManager.default.removeItem(atPath: pki.directory)
      node.down()
    }
    let port = try freeLoopbackPort()
    let server = pki.tls("identity")
    func start(_ binary: String, _ arguments: [String]) throws {
      let process = Process()
      process.executableURL = URL(fileURLWithPath: "\(node.bin)/\(binary)")
      process.arguments =
        ["--run-dir", node.runDir, "--state-dir", node.stateDir, "--node-name", "identity-host"]
        + arguments
      FileManager.default.createFile(atPath: "\(node.root)/\(binary).log", contents: nil)
      let log = try #require(FileHandle(forWritingAtPath: "\(node.root)/\(binary).log"))
      process.standardOutput = log
      process.standardError = log
      try process.run()
      processes.append(process)
    }
    try FileManager.default.createDirectory(
      atPath: node.stateDir, withIntermediateDirectories: true)
    try start("tessera-policyd", [])
    try start(
      "tessera-identityd",
      [
        "--listen", "127.0.0.1:\(port)", "--tls-cert-file", server.certificateFile,
        "--tls-key-file", server.keyFile,
        "--tls-ca-file", server.trustRootsFile,
      ])
    let labels = try LabelSet(parsing: ["app=tls", "io.kubernetes.pod.namespace=default"]).proto
    // node-a, named by its certificate, allocates: the reference is node-a's.
    var allocated: Tessera_Identity_V1_AllocateIdentityResponse?
    var lastError: (any Error)?
    for _ in 0..<200 where allocated == nil {
      do {
        allocated = try await withIdentityClient(
          port: port, tls: pki.tls("node-a"), trustRoots: server.trustRootsFile
        ) {
          try await $0.allocateIdentity(.with { $0.labels = labels })
        }
      } catch {
        lastError = error
        try await Task.sleep(for: .milliseconds(50))
      }
    }
    if allocated == nil {
      Issue.record("no allocation over TCP: \(lastError.map { "\($0)" } ?? "-")")
    }
    let id = try #require(allocated).identity.id
    let info = try await withIdentityClient(
      port: port, tls: pki.tls("node-a"), trustRoots: server.trustRootsFile
    ) {
      try await $0.getIdentity(.with { $0.id = id })
    }
    #expect(info.nodes.map(\.node) == ["node-a"])

    // node-b may not act for node-a, neither to release nor to resync its references.
    try await withIdentityClient(
      port: port, tls: pki.tls("node-b"), trustRoots: server.trustRootsFile
    ) { client in
      await #expect(throws: RPCError.self) {
        _ = try await client.releaseIdentity(
          .with {
            $0.id = id
            $0.node = "node-a"
          })
      }
      do {
        _ = try await client.syncNodeReferences(.with { $0.node = "node-a" })
        Issue.record("node-b resynced node-a's references")
      } catch let error as RPCError {
        #expect(error.code == .permissionDenied)
      }
      // Its own (empty) release is a no-op, not an error.
      let own = try await client.releaseIdentity(.with { $0.id = id })
      #expect(!own.released)
    }
    let after = try await withIdentityClient(
      port: port, tls: pki.tls("node-a"), trustRoots: server.trustRootsFile
    ) {
      try await $0.getIdentity(.with { $0.id = id })
    }
    #expect(after.references == 1, "node-a's reference survived node-b's attempts")

    // A client without a certificate, or with one from a stranger's CA, does not get through the handshake.
    for tls in [nil, pki.tls("forged-a")] as [MutualTLS?] {
      do {
        _ = try await withIdentityClient(port: port, tls: tls, trustRoots: server.trustRootsFile) {
          try await $0.listIdentities(.init(), options: .failFast(timeout: .seconds(2)))
        }
        Issue.record(
          "a client \(tls == nil ? "without a certificate" : "with a stranger's certificate") was served"
        )
      } catch let error as RPCError {
        #expect(error.code == .unavailable || error.code == .deadlineExceeded, "\(error)")
      }
    }
    // A certificate of the cluster's CA that names no node cannot act for any node.
    do {
      _ = try await withIdentityClient(
        port: port, tls: pki.tls("nosan"), trustRoots: server.trustRootsFile
      ) {
        try await $0.allocateIdentity(.with { $0.labels = labels })
      }
      Issue.record("a certificate without a node name allocated")
    } catch let error as RPCError {
      #expect(error.code == .permissionDenied)
    }
    // The local Unix socket still serves the node's own CLI.
    let listed = try node.json(["identity", "list"])
    #expect((listed["identities"] as? [[String: Any]])?.isEmpty == false)
  }
}

@Suite("Service addresses")
struct ServiceAddressTests {
  @Test("unix sockets, replica lists and DNS names parse; bad ones say why")
  func parsing() throws {
    #expect(
      try ServiceAddress(parsing: "/run/tessera/identity.sock")
        == .unixSocket("/run/tessera/identity.sock"))
    #expect(try ServiceAddress(parsing: "unix:/x.sock") == .unixSocket("/x.sock"))
    #expect(
      try ServiceAddress(parsing: "10.0.0.1:7001,10.0.0.2:7001").description
        == "10.0.0.1:7001,10.0.0.2:7001")
    #expect(try ServiceAddress(parsing: "[fd00::1]:7001").description == "[fd00::1]:7001")
    #expect(
      try ServiceAddress(parsing: "dns:identity.tessera:7001")
        == .dns(host: "identity.tessera", port: 7001))
    #expect(
      try ServiceAddress(parsing: "dns:///identity.tessera:7001")
        == .dns(host: "identity.tessera", port: 7001))
    for bad in [
      "10.0.0.1", "10.0.0.1:0", "10.0.0.1:70000", ":7001", "unix:", "10.0.0.1:7001,",
      "[fd00::1]7001",
    ] {
      #expect(throws: ServiceAddressError.self, "\(bad)") { try ServiceAddress(parsing: bad) }
    }
  }

  @Test("a TCP client without TLS is refused: Tessera never speaks plaintext on the network")
  func noPlaintextTCP() throws {
    #expect(throws: ServiceAddressError.self) {
      try GRPCClientService(address: .addresses([("127.0.0.1", 7001)]), tls: nil)
    }
    #expect(throws: Never.self) {
      try GRPCClientService(address: .unixSocket("/tmp/x.sock"), tls: nil)
    }
  }
}
