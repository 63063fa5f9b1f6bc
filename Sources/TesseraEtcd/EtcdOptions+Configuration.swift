import TesseraRuntime

extension EtcdOptions {
  public var tls: EtcdConfiguration.TLSFiles {
    .init(caFile: etcdCAFile, certificateFile: etcdCertFile, keyFile: etcdKeyFile)
  }

  /// Parses `etcd:URL[,URL…]` into a configuration with these options' TLS files.
  public func configuration(store: String) throws(EtcdError) -> EtcdConfiguration {
    guard let configuration = try EtcdConfiguration.parsing(store: store, tls: tls) else {
      throw EtcdError(code: .invalidConfiguration, message: "\(store) is not etcd:URL[,URL...]")
    }
    return configuration
  }
}
