import Foundation
import SwiftProtobuf
import TesseraProto
import Testing

/// The Swift half of the CNI contract: the vectors in Tests/ProtoVectors/ were written by
/// `protoc --encode` (see its README.md); swift-protobuf must produce and read exactly them.
@Suite("Golden proto vectors (Tests/ProtoVectors)")
struct GoldenVectorTests {
  @Test("Swift encodes the expected message to the committed bytes", arguments: GoldenVector.all)
  func encodesByteForByte(_ vector: GoldenVector) throws {
    let committed = try vector.committedBytes()
    let encoded = try vector.encode()
    if let mismatch = firstMismatch(encoded, committed) {
      Issue.record("\(vector.name).bin: \(mismatch)")
    }
  }

  @Test("decoding the committed bytes gives the expected message", arguments: GoldenVector.all)
  func decodesToExpected(_ vector: GoldenVector) throws {
    let committed = try vector.committedBytes()
    #expect(committed.count == vector.size, "\(vector.name).bin size (README lists \(vector.size))")
    try vector.checkDecode(committed)
  }

  @Test("re-encoding the decoded message gives the committed bytes", arguments: GoldenVector.all)
  func decodeThenEncodeIsIdentity(_ vector: GoldenVector) throws {
    let committed = try vector.committedBytes()
    let reencoded = try vector.reencode(committed)
    if let mismatch = firstMismatch(reencoded, committed) {
      Issue.record("\(vector.name).bin: \(mismatch)")
    }
  }

  @Test("the .txtpb names the message type the vector is checked as", arguments: GoldenVector.all)
  func readableFormNamesTheMessage(_ vector: GoldenVector) throws {
    let url = Repo.vectorsDir.appendingPathComponent("\(vector.name).txtpb")
    let text = try String(contentsOf: url, encoding: .utf8)
    let firstLine = text.split(separator: "\n", omittingEmptySubsequences: false).first ?? ""
    #expect(firstLine == "# message: \(vector.messageName)")
  }

  @Test("every vector in Tests/ProtoVectors is checked here")
  func everyVectorIsCovered() throws {
    let files = try FileManager.default.contentsOfDirectory(atPath: Repo.vectorsDir.path)
    let onDisk = Set(files.filter { $0.hasSuffix(".bin") }.map { String($0.dropLast(4)) })
    let txtpb = Set(files.filter { $0.hasSuffix(".txtpb") }.map { String($0.dropLast(6)) })
    let covered = Set(GoldenVector.all.map(\.name))
    #expect(onDisk.subtracting(covered).subtracting([UnknownFieldVector.name]).sorted() == [])
    #expect(covered.subtracting(onDisk).sorted() == [])
    #expect(txtpb == covered, "every vector but the hand-made unknown-field one has a .txtpb")
  }

  // MARK: Unknown fields from a newer peer

  @Test(
    "a response with unknown fields decodes, keeps its known fields and preserves the unknown ones")
  func unknownFieldsArePreserved() throws {
    let data = try Data(
      contentsOf: Repo.vectorsDir.appendingPathComponent("\(UnknownFieldVector.name).bin"))
    #expect(data.count == 235)
    let basic = try Data(
      contentsOf: Repo.vectorsDir.appendingPathComponent("create_endpoint_response_basic.bin"))
    #expect(
      data.prefix(basic.count) == basic, "the vector is the basic response plus appended fields")

    let decoded = try Tessera_Endpoint_V1_CreateEndpointResponse(serializedBytes: data)
    #expect(decoded.unknownFields.data == UnknownFieldVector.appended)

    var known = decoded
    known.unknownFields = UnknownStorage()
    #expect(known == Expected.createEndpointResponseBasic)

    // swift-protobuf writes unknown fields after the known ones: the bytes come back unchanged.
    let reencoded: [UInt8] = try decoded.serializedBytes()
    if let mismatch = firstMismatch(reencoded, [UInt8](data)) {
      Issue.record("re-encoding: \(mismatch)")
    }
  }

  @Test("unknown fields inside a nested message are preserved too")
  func unknownFieldsInNestedMessage() throws {
    // The same two unknown fields, this time inside `endpoint` (field 1): a newer Endpoint.
    let endpoint: [UInt8] = try Expected.createEndpointResponseBasic.endpoint.serializedBytes()
    let inner = endpoint + UnknownFieldVector.appended
    var wire: [UInt8] = [0x0A]
    var length = inner.count
    while length >= 0x80 {
      wire.append(UInt8(length & 0x7F) | 0x80)
      length >>= 7
    }
    wire.append(UInt8(length))
    wire += inner

    let decoded = try Tessera_Endpoint_V1_CreateEndpointResponse(serializedBytes: wire)
    #expect(decoded.endpoint.unknownFields.data == UnknownFieldVector.appended)
    var known = decoded
    known.endpoint.unknownFields = UnknownStorage()
    #expect(known == Expected.createEndpointResponseBasic)
    let reencoded: [UInt8] = try decoded.serializedBytes()
    #expect(reencoded == wire)
  }

  @Test("discarding unknown fields on request still decodes the known ones")
  func unknownFieldsCanBeDiscarded() throws {
    let data = try Data(
      contentsOf: Repo.vectorsDir.appendingPathComponent("\(UnknownFieldVector.name).bin"))
    var options = BinaryDecodingOptions()
    options.discardUnknownFields = true
    let decoded = try Tessera_Endpoint_V1_CreateEndpointResponse(
      serializedBytes: data, options: options)
    #expect(decoded == Expected.createEndpointResponseBasic)
  }
}

enum UnknownFieldVector {
  static let name = "create_endpoint_response_unknown_field"
  /// Field 99 varint 42, field 100 bytes "hi" (unknown_fields.md).
  static let appended = Data([0x98, 0x06, 0x2A, 0xA2, 0x06, 0x02, 0x68, 0x69])
}

/// First difference between two byte strings, or nil when equal (arrays of 21 KB are
/// unreadable in a failure message).
func firstMismatch(_ actual: [UInt8], _ expected: [UInt8]) -> String? {
  if actual == expected { return nil }
  let common = zip(actual, expected).prefix { $0 == $1 }.count
  func hex(_ bytes: ArraySlice<UInt8>) -> String {
    bytes.map { String(format: "%02x", $0) }.joined(separator: " ")
  }
  return
    "got \(actual.count) bytes, expected \(expected.count); first difference at offset \(common): "
    + "got [\(hex(actual[common..<min(actual.count, common + 16)]))], "
    + "expected [\(hex(expected[common..<min(expected.count, common + 16)]))]"
}

// MARK: - The vectors

struct GoldenVector: Sendable, CustomTestStringConvertible {
  /// File name without extension in Tests/ProtoVectors/.
  let name: String
  /// Size of the .bin as listed in the README.
  let size: Int
  let messageName: String
  let encode: @Sendable () throws -> [UInt8]
  let reencode: @Sendable ([UInt8]) throws -> [UInt8]
  let checkDecode: @Sendable ([UInt8]) throws -> Void

  var testDescription: String { name }

  init<M: SwiftProtobuf.Message & Equatable>(_ name: String, bytes size: Int, _ expected: M) {
    self.name = name
    self.size = size
    self.messageName = M.protoMessageName
    self.encode = { try expected.serializedBytes() }
    self.reencode = { bytes in try M(serializedBytes: bytes).serializedBytes() }
    self.checkDecode = { bytes in
      let decoded = try M(serializedBytes: bytes)
      #expect(decoded.unknownFields.data.isEmpty, "\(name): no unknown fields expected")
      if decoded != expected {
        Issue.record(
          "\(name).bin decodes to\n\(decoded.textFormatString())\nexpected\n\(expected.textFormatString())"
        )
      }
    }
  }

  func committedBytes() throws -> [UInt8] {
    [UInt8](try Data(contentsOf: Repo.vectorsDir.appendingPathComponent("\(name).bin")))
  }

  static let all: [GoldenVector] = [
    // CreateEndpointRequest (ADD)
    .init("create_endpoint_request_empty", bytes: 0, Tessera_Endpoint_V1_CreateEndpointRequest()),
    .init("create_endpoint_request_basic", bytes: 175, Expected.createEndpointRequestBasic),
    .init(
      "create_endpoint_request_ipv6_unicode", bytes: 200, Expected.createEndpointRequestIPv6Unicode),
    .init(
      "create_endpoint_request_max_labels", bytes: 21120, Expected.createEndpointRequestMaxLabels),
    // CreateEndpointResponse
    .init("create_endpoint_response_basic", bytes: 227, Expected.createEndpointResponseBasic),
    .init("create_endpoint_response_empty", bytes: 0, Tessera_Endpoint_V1_CreateEndpointResponse()),
    // DeleteEndpointRequest (DEL)
    .init(
      "delete_endpoint_request_basic", bytes: 74,
      Tessera_Endpoint_V1_DeleteEndpointRequest.with {
        $0.endpoint = .with {
          $0.id = 0
          $0.containerID = Expected.cid
          $0.interfaceName = "eth0"
        }
      }),
    .init(
      "delete_endpoint_request_by_id", bytes: 13,
      Tessera_Endpoint_V1_DeleteEndpointRequest.with {
        $0.endpoint = .with { $0.id = UInt64.max }
      }),
    .init("delete_endpoint_request_empty", bytes: 0, Tessera_Endpoint_V1_DeleteEndpointRequest()),
    // DeleteEndpointResponse
    .init(
      "delete_endpoint_response_existed", bytes: 4,
      Tessera_Endpoint_V1_DeleteEndpointResponse.with {
        $0.existed = true
        $0.deleted = 1
      }),
    .init("delete_endpoint_response_empty", bytes: 0, Tessera_Endpoint_V1_DeleteEndpointResponse()),
    // GetEndpointRequest (CHECK)
    .init(
      "get_endpoint_request_basic", bytes: 74,
      Tessera_Endpoint_V1_GetEndpointRequest.with {
        $0.endpoint = .with {
          $0.containerID = Expected.cid
          $0.interfaceName = "eth0"
        }
      }),
    .init("get_endpoint_request_empty", bytes: 0, Tessera_Endpoint_V1_GetEndpointRequest()),
    // Endpoint (CHECK)
    .init("endpoint_full", bytes: 190, Expected.endpointFull),
    .init("endpoint_empty", bytes: 0, Tessera_Endpoint_V1_Endpoint()),
    .init(
      "endpoint_waiting", bytes: 28,
      Tessera_Endpoint_V1_Endpoint.with {
        $0.id = 12
        $0.containerID = "abc"
        $0.interfaceName = "eth0"
        $0.ips = ["10.199.0.12"]
        $0.state = .waitingForIdentity
      }),
    // GarbageCollectEndpoints (GC)
    .init(
      "garbage_collect_endpoints_request_basic", bytes: 36,
      Tessera_Endpoint_V1_GarbageCollectEndpointsRequest.with {
        $0.validAttachments = [("a1", "eth0"), ("b2", "eth0"), ("b2", "net1")].map {
          container, interface in
          .with {
            $0.containerID = container
            $0.interfaceName = interface
          }
        }
      }),
    .init(
      "garbage_collect_endpoints_request_empty", bytes: 0,
      Tessera_Endpoint_V1_GarbageCollectEndpointsRequest()),
    .init(
      "garbage_collect_endpoints_response_basic", bytes: 65,
      Tessera_Endpoint_V1_GarbageCollectEndpointsResponse.with {
        $0.removed = [
          .with {
            $0.id = 3
            $0.containerID = "gone-1"
            $0.interfaceName = "eth0"
            $0.ips = ["10.199.0.3"]
            $0.state = .disconnected
          },
          .with {
            $0.id = 4
            $0.containerID = "gone-2"
            $0.interfaceName = "eth0"
            $0.ips = ["fd00:199::4"]
            $0.state = .disconnected
          },
        ]
      }),
    .init(
      "garbage_collect_endpoints_response_empty", bytes: 0,
      Tessera_Endpoint_V1_GarbageCollectEndpointsResponse()),
    // grpc.health.v1 (STATUS)
    .init("health_check_request_empty", bytes: 0, Grpc_Health_V1_HealthCheckRequest()),
    .init(
      "health_check_request_service", bytes: 37,
      Grpc_Health_V1_HealthCheckRequest.with {
        $0.service = "tessera.endpoint.v1.EndpointService"
      }),
    .init(
      "health_check_response_serving", bytes: 2,
      Grpc_Health_V1_HealthCheckResponse.with { $0.status = .serving }),
    .init(
      "health_check_response_not_serving", bytes: 2,
      Grpc_Health_V1_HealthCheckResponse.with { $0.status = .notServing }),
    .init(
      "health_check_response_empty", bytes: 0,
      Grpc_Health_V1_HealthCheckResponse.with { $0.status = .unknown }),
  ]
}

/// The field values listed in Tests/ProtoVectors/README.md, built in Swift.
enum Expected {
  static let cid = "0f3c9a1e5b7d4c2a8e6f0b1d3c5a7e9f0f3c9a1e5b7d4c2a8e6f0b1d3c5a7e9f"

  static func label(_ source: String, _ key: String, _ value: String) -> Tessera_Common_V1_Label {
    .with {
      $0.source = source
      $0.key = key
      $0.value = value
    }
  }

  static let createEndpointRequestBasic = Tessera_Endpoint_V1_CreateEndpointRequest.with {
    $0.containerID = cid
    $0.interfaceName = "eth0"
    $0.hostInterface = "veth3a1b2c4d"
    $0.ips = ["10.199.0.5"]
    $0.namespace = "default"
    $0.podName = "pod-1"
    $0.labels = [label("k8s", "app", "web"), label("", "tier", "db")]
    $0.sync = true
    $0.netns = "/var/run/netns/tsr-e2e-pod-1"
  }

  static let createEndpointRequestIPv6Unicode = Tessera_Endpoint_V1_CreateEndpointRequest.with {
    $0.containerID = "podman-42"
    $0.interfaceName = "eth0"
    $0.hostInterface = "veth0"
    $0.ips = ["10.199.0.6", "fd00:199::6", "2001:db8::ff00:42:8329"]
    $0.namespace = ""
    $0.podName = "café-ünïcødé-☃"
    $0.labels = [
      label("k8s", "app.kubernetes.io/name", "日本語-値"),
      label("container", "emoji", "🚀✓"),
      label("", "empty", ""),
    ]
    $0.sync = true
    $0.netns = "/run/netns/ns-ü"
  }

  static let createEndpointRequestMaxLabels = Tessera_Endpoint_V1_CreateEndpointRequest.with {
    $0.containerID = "max-labels"
    $0.interfaceName = "eth0"
    $0.hostInterface = "vethmax"
    $0.ips = ["10.199.0.254"]
    $0.namespace = "default"
    $0.podName = "max-labels"
    $0.sync = true
    $0.labels = (0..<64).map { i in
      let nn = i < 10 ? "0\(i)" : "\(i)"
      return label(
        "k8s", "key-\(nn)-" + String(repeating: "k", count: 56),
        "value-\(nn)-" + String(repeating: "v", count: 244))
    }
  }

  static let createEndpointResponseBasic = Tessera_Endpoint_V1_CreateEndpointResponse.with {
    $0.endpoint = .with {
      $0.id = 7
      $0.containerID = cid
      $0.interfaceName = "eth0"
      $0.hostInterface = "veth3a1b2c4d"
      $0.ips = ["10.199.0.5"]
      $0.namespace = "default"
      $0.podName = "pod-1"
      $0.labels = [
        label("k8s", "app", "web"), label("k8s", "io.kubernetes.pod.namespace", "default"),
      ]
      $0.identity = 1042
      $0.state = .ready
      $0.policyRevision = 3
      $0.identityRevision = 1
      $0.netns = "/var/run/netns/tsr-e2e-pod-1"
      $0.createdAtUnixMs = 1_735_689_600_123
    }
  }

  static let endpointFull = Tessera_Endpoint_V1_Endpoint.with {
    $0.id = UInt64.max
    $0.containerID = "ctr-ünï"
    $0.interfaceName = "eth1"
    $0.hostInterface = "vethfull"
    $0.ips = ["10.199.0.9", "fd00:199::9"]
    $0.namespace = "kube-system"
    $0.podName = "coredns-ß"
    $0.labels = [label("k8s", "k8s-app", "kube-dns"), label("reserved", "init", "")]
    $0.identity = UInt32.max
    $0.state = .restoring
    $0.policyRevision = 9_007_199_254_740_993  // 2^53 + 1
    $0.identityRevision = UInt64.max - 1
    $0.netns = "/proc/1234/ns/net"
    $0.createdAtUnixMs = -1
  }
}
