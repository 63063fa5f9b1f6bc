#if canImport(Glibc)
  import Glibc
#endif

/// Where the backend finds its object and pins its maps.
extension BPFDatapathBackend {
  public struct Configuration: Sendable, Equatable {
    /// The compiled object (`scripts/build-bpf.sh` → `.build-bpf/endpoint.bpf.o`).
    public var objectPath: String
    /// Where maps and programs are pinned; one per node (two "nodes" on one
    /// machine share bpffs, so each needs its own).
    public var pinDirectory: String
    /// How many flows the node's conntrack table holds (an LRU table: when it is full, a
    /// new flow evicts the least recently used). Each pod-to-pod connection on one node
    /// takes two, one per endpoint; about 170 bytes of kernel memory each, all allocated
    /// when the table is created. Changing it replaces the table on the next start, the
    /// tracked flows copied over.
    public var conntrackMaxEntries: UInt32

    public init(
      objectPath: String, pinDirectory: String = Self.defaultPinDirectory,
      conntrackMaxEntries: UInt32 = Self.defaultConntrackMaxEntries
    ) {
      self.objectPath = objectPath
      self.pinDirectory = pinDirectory
      self.conntrackMaxEntries = conntrackMaxEntries
    }

    public static let defaultConntrackMaxEntries = BPFLoader.defaultConntrackMaxEntries
    /// Bounds of ``conntrackMaxEntries``: below, a few busy pods would evict each other's
    /// flows; above, the table alone would take gigabytes.
    public static let conntrackMaxEntriesRange: ClosedRange<UInt32> = 1024...16_777_216

    public static let defaultPinDirectory = "/sys/fs/bpf/tessera"
    public static let installedObjectPath = "/usr/lib/tessera/endpoint.bpf.o"

    /// The BPF object to load: `$TESSERA_BPF_OBJECT`, then
    /// `<executable dir>/tessera-bpf/endpoint.bpf.o`, then
    /// `<repo>/.build-bpf/endpoint.bpf.o` for an executable built in
    /// `<repo>/.build/…`, then `/usr/lib/tessera/endpoint.bpf.o`.
    public static func locateObject() -> String? {
      if let env = getenv("TESSERA_BPF_OBJECT"), env.pointee != 0 {
        return String(cString: env)
      }
      var candidates: [String] = []
      if let executable = executablePath() {
        var directory = parent(of: executable)
        candidates.append(directory + "/tessera-bpf/endpoint.bpf.o")
        // <repo>/.build/debug/x or <repo>/.build/x86_64-unknown-linux-gnu/debug/x
        for _ in 0..<4 {
          candidates.append(directory + "/.build-bpf/endpoint.bpf.o")
          if directory == "/" { break }
          directory = parent(of: directory)
        }
      }
      candidates.append(installedObjectPath)
      return candidates.first { access($0, R_OK) == 0 }
    }
  }

  private static func executablePath() -> String? {
    var buffer = [CChar](repeating: 0, count: 4096)
    let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
    guard n > 0 else { return nil }
    return String(decoding: buffer.prefix(n).map { UInt8(bitPattern: $0) }, as: UTF8.self)
  }

  static func parent(of path: String) -> String {
    guard let slash = path.lastIndex(of: "/") else { return "." }
    return slash == path.startIndex ? "/" : String(path[..<slash])
  }
}
