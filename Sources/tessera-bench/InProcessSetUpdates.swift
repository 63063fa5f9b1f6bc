import Foundation
import Glibc

/// Pod joins applied in process through the libraries the `nft` and `ipset`
/// tools are built on (`libnftables`, `libipset`, loaded with `dlopen`), so
/// that the IP-based designs' data-plane write is timed the way Tessera's
/// ipcache write is: one netlink conversation per join, no process start.
///
/// Both libraries come with the `nftables` and `ipset` packages (as
/// `libnftables1` and `libipset13`); no headers are needed.
enum InProcessSetUpdates {
  /// The library calls we need, resolved once.
  private struct NFTables: @unchecked Sendable {  // C function pointers, immutable after load
    typealias New = @convention(c) (UInt32) -> OpaquePointer?
    typealias Run = @convention(c) (OpaquePointer?, UnsafePointer<CChar>?) -> Int32
    typealias Buffer = @convention(c) (OpaquePointer?) -> Int32
    typealias Free = @convention(c) (OpaquePointer?) -> Void
    var new: New
    var run: Run
    var bufferOutput: Buffer
    var bufferError: Buffer
    var free: Free
  }

  private struct IPSet: @unchecked Sendable {  // C function pointers, immutable after load
    typealias LoadTypes = @convention(c) () -> Void
    typealias Initialize = @convention(c) () -> OpaquePointer?
    typealias ParseLine = @convention(c) (OpaquePointer?, UnsafeMutablePointer<CChar>?) -> Int32
    typealias Finish = @convention(c) (OpaquePointer?) -> Int32
    var initialize: Initialize
    var parseLine: ParseLine
    var finish: Finish
  }

  private static func symbol<T>(_ library: UnsafeMutableRawPointer, _ name: String, as: T.Type)
    throws -> T
  {
    guard let address = dlsym(library, name) else {
      throw BenchError("\(name) not found: \(String(cString: dlerror()))")
    }
    return unsafeBitCast(address, to: T.self)
  }

  private static func open(_ name: String) throws -> UnsafeMutableRawPointer {
    guard let library = dlopen(name, RTLD_NOW) else {
      throw BenchError(
        "\(name) cannot be loaded (scripts/install-deps.sh installs it): \(String(cString: dlerror()))"
      )
    }
    return library
  }

  private static let nftables: Result<NFTables, any Error> = Result {
    let library = try open("libnftables.so.1")
    return NFTables(
      new: try symbol(library, "nft_ctx_new", as: NFTables.New.self),
      run: try symbol(library, "nft_run_cmd_from_buffer", as: NFTables.Run.self),
      bufferOutput: try symbol(library, "nft_ctx_buffer_output", as: NFTables.Buffer.self),
      bufferError: try symbol(library, "nft_ctx_buffer_error", as: NFTables.Buffer.self),
      free: try symbol(library, "nft_ctx_free", as: NFTables.Free.self))
  }

  private static let ipset: Result<IPSet, any Error> = Result {
    let library = try open("libipset.so.13")
    // The set types (hash:ip, ...) register themselves here, as the ipset tool does first.
    try symbol(library, "ipset_load_types", as: IPSet.LoadTypes.self)()
    return IPSet(
      initialize: try symbol(library, "ipset_init", as: IPSet.Initialize.self),
      parseLine: try symbol(library, "ipset_parse_line", as: IPSet.ParseLine.self),
      finish: try symbol(library, "ipset_fini", as: IPSet.Finish.self))
  }

  /// p50 of one `add element` transaction per address (µs), in `router`, through one
  /// libnftables context (its netlink socket opened before the first timed call).
  static func nftJoinMicroseconds(
    in router: NetworkNamespace, table: String, set: String,
    addresses: [String]
  ) throws -> Double {
    let nft = try nftables.get()
    return try router.run {
      guard let context = nft.new(0) else { throw BenchError("nft_ctx_new failed") }
      defer { nft.free(context) }
      // Keep nft's output and errors off the terminal; errors are read back on failure.
      _ = nft.bufferOutput(context)
      _ = nft.bufferError(context)
      guard nft.run(context, "list set inet \(table) \(set)") == 0 else {
        throw BenchError("libnftables: the set inet \(table) \(set) is missing")
      }
      var samples = Samples()
      for address in addresses {
        let command = "add element inet \(table) \(set) { \(address) }"
        let start = ContinuousClock.now
        let status = nft.run(context, command)
        samples.add(.now - start)
        guard status == 0 else { throw BenchError("libnftables: \(command) failed") }
      }
      return samples.p50 * 1000
    }
  }

  /// p50 of one `add` command per address (µs), in `router`, through one libipset
  /// session; outside restore mode libipset sends and commits each command on its own.
  static func ipsetJoinMicroseconds(in router: NetworkNamespace, set: String, addresses: [String])
    throws -> Double
  {
    let library = try ipset.get()
    return try router.run {
      guard let session = library.initialize() else { throw BenchError("ipset_init failed") }
      defer { _ = library.finish(session) }
      func run(_ line: String) -> Int32 {
        var bytes = Array(line.utf8CString)  // parsed in place, so a mutable copy
        return bytes.withUnsafeMutableBufferPointer { library.parseLine(session, $0.baseAddress) }
      }
      // An unmeasured add and delete first, so the session's netlink socket is open and warm.
      let scratch = "10.94.255.254"
      guard run("add \(set) \(scratch) -exist") == 0, run("del \(set) \(scratch)") == 0 else {
        throw BenchError("libipset: the set \(set) cannot be written")
      }
      var samples = Samples()
      for address in addresses {
        let start = ContinuousClock.now
        let status = run("add \(set) \(address)")
        samples.add(.now - start)
        guard status == 0 else { throw BenchError("libipset: add \(set) \(address) failed") }
      }
      return samples.p50 * 1000
    }
  }
}
