import TesseraEtcd

/// The `--identity-store` setting: `sqlite:PATH` (one node) or `etcd:URL[,URL…]` (shared by many).
public enum IdentityStoreSpec: Equatable, Sendable {
  case sqlite(path: String)
  case etcd(endpoints: [EtcdConfiguration.Endpoint])

  public init(parsing text: String) throws(IdentityError) {
    if text.hasPrefix("sqlite:") {
      let path = String(text.dropFirst("sqlite:".count))
      guard !path.isEmpty else {
        throw IdentityError(
          code: .invalidLabels, message: "--identity-store sqlite: needs a file path")
      }
      self = .sqlite(path: path)
    } else {
      let etcd: EtcdConfiguration?
      do { etcd = try EtcdConfiguration.parsing(store: text) } catch {
        throw IdentityError(
          code: .invalidLabels, message: "--identity-store \(text): \(error.message)")
      }
      guard let etcd else {
        throw IdentityError(
          code: .invalidLabels,
          message: "--identity-store must be sqlite:PATH or etcd:URL[,URL...], not \(text)")
      }
      self = .etcd(endpoints: etcd.endpoints)
    }
  }
}
