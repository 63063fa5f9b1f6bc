import CTesseraBPF
import Logging
import TesseraCore

#if canImport(Glibc)
  import Glibc
#endif

/// Each endpoint's stub programs: their attachment to the device, and test runs.
extension BPFDatapathBackend {
  /// After a restart: re-attach an endpoint whose device is there but whose
  /// filters are gone or not its own (nothing is touched when all is in place).
  func repairAttachment(_ endpoint: DatapathEndpoint, info: endpoint_info) throws(DatapathError) {
    guard !endpoint.hostInterface.isEmpty else { return }
    let ifindex = Int32(bitPattern: if_nametoindex(endpoint.hostInterface))
    guard ifindex > 0 else {
      logger.warning(
        "endpoint device is gone",
        metadata: ["endpoint": "\(endpoint.id)", "device": "\(endpoint.hostInterface)"])
      return
    }
    guard let programs = try loader.pinnedPrograms(endpoint.id), programs.fromContainer >= 0,
      programs.toContainer >= 0
    else {
      logger.warning(
        "endpoint programs are not pinned; they are loaded at the next regeneration",
        metadata: ["endpoint": "\(endpoint.id)"])
      return
    }
    let attached = try loader.attachedProgramIDs(ifindex: ifindex, device: endpoint.hostInterface)
    let expected = programs.ids
    if attached.from == expected.from, attached.to == expected.to, UInt32(ifindex) == info.ifindex {
      return
    }
    logger.notice(
      "re-attaching endpoint programs",
      metadata: ["endpoint": "\(endpoint.id)", "device": "\(endpoint.hostInterface)"])
    var updated = info
    updated.ifindex = UInt32(ifindex)
    try writeInfo(endpoint.id, updated)
    if try loader.attach(ifindex: ifindex, programs, device: endpoint.hostInterface) {
      updated.flags |= UInt32(TESSERA_EP_F_HOOK_CREATED)
      try writeInfo(endpoint.id, updated)
    }
  }

  // MARK: Extras (CLI, tests, benchmarks)

  /// The verdict of a test run.
  public struct ProgramRun: Sendable, Equatable {
    /// The tc action: `TC_ACT_OK` (0) passes, `TC_ACT_SHOT` (2) drops.
    public var action: UInt32
    /// Mean time per run in nanoseconds.
    public var nanoseconds: UInt32
    public var passed: Bool { action == 0 }
  }

  /// Runs the endpoint's program for `direction` on an Ethernet frame with
  /// `BPF_PROG_TEST_RUN` (ingress runs `to_container`, egress
  /// `from_container`). Affects conntrack and counters like a real packet.
  public func runProgram(
    endpointID: UInt64, direction: TrafficDirection, packet: [UInt8], repeat count: UInt32 = 1
  ) throws(DatapathError) -> ProgramRun {
    guard let programs = try loader.pinnedPrograms(endpointID) else {
      throw DatapathError(code: .notFound, message: "endpoint \(endpointID) has no pinned programs")
    }
    let fd = direction == .ingress ? programs.toContainer : programs.fromContainer
    let (action, nanoseconds) = try BPFLoader.testRun(programFD: fd, packet: packet, repeat: count)
    return ProgramRun(action: action, nanoseconds: nanoseconds)
  }

  /// Program ids of the Tessera filters on a device, 0 when absent.
  public func attachedProgramIDs(interface: String) throws(DatapathError) -> (
    fromContainer: UInt32, toContainer: UInt32
  ) {
    let ids = try loader.attachedProgramIDs(
      ifindex: try Self.ifindex(of: interface), device: interface)
    return (ids.from, ids.to)
  }

  /// Program ids of the endpoint's pinned stubs, 0 when absent.
  public func pinnedProgramIDs(endpointID: UInt64) throws(DatapathError) -> (
    fromContainer: UInt32, toContainer: UInt32
  ) {
    guard let programs = try loader.pinnedPrograms(endpointID) else { return (0, 0) }
    let ids = programs.ids
    return (ids.from, ids.to)
  }
}
