import GRPCCore
import GRPCNIOTransportHTTP2
import X509

/// Mutual TLS between Tessera processes on TCP (docs/architecture.md §2): each
/// side offers a certificate that names it (a SAN DNS name: the node, or the
/// service) and accepts only peers whose certificate chains to `trustRootsFile`.
public struct MutualTLS: Sendable, Hashable {
  /// PEM certificate (chain) offered to peers.
  public var certificateFile: String
  /// PEM private key of that certificate.
  public var keyFile: String
  /// PEM bundle of the authorities peers' certificates must chain to.
  public var trustRootsFile: String

  public init(certificateFile: String, keyFile: String, trustRootsFile: String) {
    self.certificateFile = certificateFile
    self.keyFile = keyFile
    self.trustRootsFile = trustRootsFile
  }

  var serverSecurity: HTTP2ServerTransport.Posix.TransportSecurity {
    .mTLS(
      certificateChain: [.file(path: certificateFile, format: .pem)],
      privateKey: .file(path: keyFile, format: .pem)
    ) {
      $0.trustRoots = .certificates([.file(path: trustRootsFile, format: .pem)])
      // Peers are named by their certificate, not by the address they connect from.
      $0.clientCertificateVerification = .noHostnameVerification
    }
  }

  var clientSecurity: HTTP2ClientTransport.Posix.TransportSecurity {
    .mTLS(
      certificateChain: [.file(path: certificateFile, format: .pem)],
      privateKey: .file(path: keyFile, format: .pem)
    ) {
      $0.trustRoots = .certificates([.file(path: trustRootsFile, format: .pem)])
      // Replicas behind one name share a certificate authority, not a host name.
      $0.serverCertificateVerification = .noHostnameVerification
    }
  }
}

/// Where a client reaches a service: this node's Unix socket, or replicas on TCP.
///
/// Text forms: `unix:PATH` (or a path starting with `/`), `HOST:PORT[,HOST:PORT…]`
/// (IPv4 addresses; IPv6 as `[ADDR]:PORT`), `dns:NAME:PORT` (every address the
/// name resolves to). Several addresses are balanced round-robin.
public enum ServiceAddress: Sendable, Hashable, CustomStringConvertible {
  case unixSocket(String)
  case addresses([(host: String, port: Int)])
  case dns(host: String, port: Int)

  public init(parsing text: String) throws(ServiceAddressError) {
    if text.hasPrefix("/") {
      self = .unixSocket(text)
    } else if text.hasPrefix("unix:") {
      let path = String(text.dropFirst(5))
      guard !path.isEmpty else { throw ServiceAddressError(text: text, problem: "no socket path") }
      self = .unixSocket(path)
    } else if text.hasPrefix("dns:") {
      let (host, port) = try Self.hostPort(
        String(text.dropFirst(4)).replacingPrefix("///", with: ""), in: text)
      self = .dns(host: host, port: port)
    } else {
      let parts = text.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
      var pairs: [(host: String, port: Int)] = []
      for part in parts { pairs.append(try Self.hostPort(part, in: text)) }
      guard !pairs.isEmpty else { throw ServiceAddressError(text: text, problem: "no address") }
      self = .addresses(pairs)
    }
  }

  private static func hostPort(_ part: String, in text: String) throws(ServiceAddressError) -> (
    host: String, port: Int
  ) {
    var host: Substring
    let portText: Substring
    if part.hasPrefix("[") {
      guard let close = part.firstIndex(of: "]"), part[part.index(after: close)...].hasPrefix(":")
      else {
        throw ServiceAddressError(text: text, problem: "'\(part)' is not [IPV6]:PORT")
      }
      host = part[part.index(after: part.startIndex)..<close]
      portText = part[part.index(close, offsetBy: 2)...]
    } else {
      guard let colon = part.lastIndex(of: ":") else {
        throw ServiceAddressError(text: text, problem: "'\(part)' has no :PORT")
      }
      host = part[..<colon]
      portText = part[part.index(after: colon)...]
    }
    guard !host.isEmpty else {
      throw ServiceAddressError(text: text, problem: "'\(part)' has no host")
    }
    guard let port = Int(portText), (1...65535).contains(port) else {
      throw ServiceAddressError(text: text, problem: "'\(portText)' is not a port (1-65535)")
    }
    if host == "localhost" { host = "127.0.0.1" }
    return (String(host), port)
  }

  public var isLocal: Bool { if case .unixSocket = self { true } else { false } }

  public var description: String {
    switch self {
    case .unixSocket(let path): "unix:\(path)"
    case .addresses(let pairs):
      pairs.map { $0.host.contains(":") ? "[\($0.host)]:\($0.port)" : "\($0.host):\($0.port)" }
        .joined(separator: ",")
    case .dns(let host, let port): "dns:\(host):\(port)"
    }
  }

  public static func == (lhs: Self, rhs: Self) -> Bool { lhs.description == rhs.description }
  public func hash(into hasher: inout Hasher) { hasher.combine(description) }

  var target: any ResolvableTarget {
    switch self {
    case .unixSocket(let path): return .unixDomainSocket(path: path)
    case .dns(let host, let port): return .dns(host: host, port: port)
    case .addresses(let pairs):
      if pairs.allSatisfy({ !$0.host.contains(":") }) { return .ipv4(pairs: pairs) }
      return .ipv6(pairs: pairs)
    }
  }
}

/// A client address that cannot be used.
public struct ServiceAddressError: Error, CustomStringConvertible, Sendable {
  public var text: String
  public var problem: String
  public var description: String { "'\(text)': \(problem)" }
}

extension String {
  fileprivate func replacingPrefix(_ prefix: String, with replacement: String) -> String {
    hasPrefix(prefix) ? replacement + dropFirst(prefix.count) : self
  }
}

extension ServerContext {
  /// The name a TCP peer's certificate gives it (its first SAN DNS name), or nil for a
  /// caller on this node's Unix socket, which the socket's permissions vouch for.
  public var authenticatedPeer: String? {
    guard let posix = transportSpecific as? HTTP2ServerTransport.Posix.Context,
      let certificate = posix.peerCertificate
    else {
      return nil
    }
    guard let names = try? certificate.extensions.subjectAlternativeNames else { return "" }
    for name in names {
      if case .dnsName(let dns) = name { return dns }
    }
    return ""
  }

  /// The node a request may act for: the requested one when the caller is on the Unix
  /// socket, else the node its certificate names, which must match any requested name.
  ///
  /// - Returns: nil when nothing was requested on the Unix socket (the daemon's own node).
  /// - Throws: PERMISSION_DENIED when a certificate names no node or another node.
  public func actingNode(requested: String) throws(RPCError) -> String? {
    guard let peer = authenticatedPeer else { return requested.isEmpty ? nil : requested }
    guard !peer.isEmpty else {
      throw RPCError(
        code: .permissionDenied, message: "the client certificate names no node (no SAN DNS name)")
    }
    guard requested.isEmpty || requested == peer else {
      throw RPCError(
        code: .permissionDenied, message: "node '\(peer)' may not act for node '\(requested)'")
    }
    return peer
  }
}
