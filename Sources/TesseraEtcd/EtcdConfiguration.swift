import Foundation

/// Where etcd is and how to talk to it.
public struct EtcdConfiguration: Sendable {
  /// One cluster member's client URL.
  public struct Endpoint: Hashable, Sendable, CustomStringConvertible {
    public var host: String
    public var port: Int
    /// `https://`: TLS with ``EtcdConfiguration/tls``.
    public var secure: Bool

    public init(host: String, port: Int, secure: Bool = false) {
      self.host = host
      self.port = port
      self.secure = secure
    }

    /// Parses `http://HOST:PORT`, `https://HOST:PORT` or `HOST:PORT`.
    public init(parsing text: String) throws(EtcdError) {
      var rest = Substring(text)
      var secure = false
      if rest.hasPrefix("https://") {
        secure = true
        rest = rest.dropFirst("https://".count)
      } else if rest.hasPrefix("http://") {
        rest = rest.dropFirst("http://".count)
      }
      if rest.hasSuffix("/") { rest = rest.dropLast() }
      guard let colon = rest.lastIndex(of: ":"), let port = Int(rest[rest.index(after: colon)...]),
        (1...65535).contains(port), colon > rest.startIndex
      else {
        throw EtcdError(
          code: .invalidConfiguration, message: "etcd endpoint \(text) is not http[s]://HOST:PORT")
      }
      var host = String(rest[..<colon])
      if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
      guard !host.isEmpty, !host.contains("/") else {
        throw EtcdError(code: .invalidConfiguration, message: "etcd endpoint \(text) has no host")
      }
      self.init(host: host, port: port, secure: secure)
    }

    public var description: String { "\(secure ? "https" : "http")://\(host):\(port)" }
  }

  /// PEM files for `https://` endpoints; without a CA the system roots are trusted.
  public struct TLSFiles: Sendable {
    public var caFile: String?
    public var certificateFile: String?
    public var keyFile: String?

    public init(caFile: String? = nil, certificateFile: String? = nil, keyFile: String? = nil) {
      self.caFile = caFile
      self.certificateFile = certificateFile
      self.keyFile = keyFile
    }
  }

  public var endpoints: [Endpoint]
  public var tls: TLSFiles
  /// Deadline of one attempt on one member. A leader election stalls writes
  /// for about a second, so a little more than that.
  public var requestTimeout: Duration
  /// Attempts of one call across members before it fails as unavailable.
  public var attempts: Int

  public init(
    endpoints: [Endpoint], tls: TLSFiles = TLSFiles(),
    requestTimeout: Duration = .milliseconds(1500), attempts: Int? = nil
  ) {
    self.endpoints = endpoints
    self.tls = tls
    self.requestTimeout = requestTimeout
    self.attempts = attempts ?? max(2, endpoints.count + 1)
  }

  /// Parses a comma-separated endpoint list (`http://a:2379,http://b:2379`).
  public init(parsing list: String, tls: TLSFiles = TLSFiles()) throws(EtcdError) {
    var endpoints: [Endpoint] = []
    for item in list.split(separator: ",") where !item.trimmingCharacters(in: .whitespaces).isEmpty
    {
      endpoints.append(try Endpoint(parsing: item.trimmingCharacters(in: .whitespaces)))
    }
    guard !endpoints.isEmpty else {
      throw EtcdError(code: .invalidConfiguration, message: "no etcd endpoint in \"\(list)\"")
    }
    if endpoints.contains(where: \.secure) == false, tls.certificateFile != nil || tls.caFile != nil
    {
      throw EtcdError(
        code: .invalidConfiguration, message: "TLS files given but no endpoint is https://")
    }
    self.init(endpoints: endpoints, tls: tls)
  }

  /// A store setting naming etcd members: `etcd:URL[,URL…]`, as `--identity-store`
  /// and `--cluster-store` take it. Nil when the setting names another kind of store.
  public static func parsing(store setting: String, tls: TLSFiles = TLSFiles()) throws(EtcdError)
    -> EtcdConfiguration?
  {
    guard setting.hasPrefix(storeScheme) else { return nil }
    return try EtcdConfiguration(parsing: String(setting.dropFirst(storeScheme.count)), tls: tls)
  }

  public static let storeScheme = "etcd:"
}
