import Foundation
import SwiftProtobuf
import Testing

// MARK: - The checker

/// Every way `current` breaks peers built from `baseline`, one sentence each (empty: compatible).
///
/// Field checks go by number, not name (renaming a field is wire compatible):
/// - every field of every baseline message (nested ones included) still exists with the same
///   number, type, label (singular/repeated) and, for message and enum fields, the same type name;
///   a field may only disappear if its number is in the message's `reserved` ranges;
/// - every value number of every baseline enum still exists;
/// - every service and method still exists with the same input and output types and the same
///   client/server streaming flags.
/// Additions (messages, fields, enum values, services, methods) are always accepted.
func wireIncompatibilities(
  baseline: Google_Protobuf_FileDescriptorSet,
  current: Google_Protobuf_FileDescriptorSet
) -> [String] {
  let old = DescriptorIndex(baseline)
  let new = DescriptorIndex(current)
  var problems: [String] = []

  for (name, oldMessage) in old.messages.sorted(by: { $0.key < $1.key }) {
    guard let newMessage = new.messages[name] else {
      problems.append("message \(name) was removed")
      continue
    }
    let newFields = Dictionary(
      newMessage.field.map { ($0.number, $0) }, uniquingKeysWith: { first, _ in first })
    for field in oldMessage.field.sorted(by: { $0.number < $1.number }) {
      let what = "field \(name).\(field.name) = \(field.number)"
      guard let newField = newFields[field.number] else {
        let reserved = newMessage.reservedRange.contains {
          field.number >= $0.start && field.number < $0.end  // `end` is exclusive
        }
        if reserved { continue }
        if let moved = newMessage.field.first(where: { $0.name == field.name }) {
          problems.append("\(what) was renumbered to \(moved.number)")
        } else {
          problems.append("\(what) was removed without reserving its number")
        }
        continue
      }
      if newField.type != field.type {
        problems.append("\(what) changed type from \(field.type) to \(newField.type)")
      }
      if newField.label != field.label {
        problems.append("\(what) changed label from \(field.label) to \(newField.label)")
      }
      let named: Set<Google_Protobuf_FieldDescriptorProto.TypeEnum> = [.message, .enum, .group]
      if newField.type == field.type, named.contains(field.type),
        newField.typeName != field.typeName
      {
        problems.append("\(what) changed type from \(field.typeName) to \(newField.typeName)")
      }
    }
  }

  for (name, oldEnum) in old.enums.sorted(by: { $0.key < $1.key }) {
    guard let newEnum = new.enums[name] else {
      problems.append("enum \(name) was removed")
      continue
    }
    let numbers = Set(newEnum.value.map(\.number))
    for value in oldEnum.value where !numbers.contains(value.number) {
      problems.append("enum value \(name).\(value.name) = \(value.number) was removed")
    }
  }

  for (name, oldService) in old.services.sorted(by: { $0.key < $1.key }) {
    guard let newService = new.services[name] else {
      problems.append("service \(name) was removed")
      continue
    }
    let newMethods = Dictionary(
      newService.method.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
    for method in oldService.method {
      let what = "method \(name)/\(method.name)"
      guard let newMethod = newMethods[method.name] else {
        problems.append("\(what) was removed")
        continue
      }
      if newMethod.inputType != method.inputType {
        problems.append(
          "\(what) changed input type from \(method.inputType) to \(newMethod.inputType)")
      }
      if newMethod.outputType != method.outputType {
        problems.append(
          "\(what) changed output type from \(method.outputType) to \(newMethod.outputType)")
      }
      if newMethod.clientStreaming != method.clientStreaming {
        problems.append(
          "\(what) changed client streaming from \(method.clientStreaming) to \(newMethod.clientStreaming)"
        )
      }
      if newMethod.serverStreaming != method.serverStreaming {
        problems.append(
          "\(what) changed server streaming from \(method.serverStreaming) to \(newMethod.serverStreaming)"
        )
      }
    }
  }
  return problems
}

/// Messages and enums (nested ones included) by fully qualified name with a leading dot, the
/// form protoc uses in `type_name`, `input_type` and `output_type`; services by full name.
private struct DescriptorIndex {
  var messages: [String: Google_Protobuf_DescriptorProto] = [:]
  var enums: [String: Google_Protobuf_EnumDescriptorProto] = [:]
  var services: [String: Google_Protobuf_ServiceDescriptorProto] = [:]

  init(_ set: Google_Protobuf_FileDescriptorSet) {
    for file in set.file {
      let scope = file.package.isEmpty ? "" : ".\(file.package)"
      for message in file.messageType { add(message, in: scope) }
      for enumType in file.enumType { enums["\(scope).\(enumType.name)"] = enumType }
      for service in file.service {
        let name = file.package.isEmpty ? service.name : "\(file.package).\(service.name)"
        services[name] = service
      }
    }
  }

  private mutating func add(_ message: Google_Protobuf_DescriptorProto, in scope: String) {
    let name = "\(scope).\(message.name)"
    messages[name] = message
    for nested in message.nestedType { add(nested, in: name) }
    for enumType in message.enumType { enums["\(name).\(enumType.name)"] = enumType }
  }
}

// MARK: - Tests

@Suite("Wire compatibility with proto/baseline.binpb")
struct WireCompatibilityTests {
  @Test(
    "proto/ as protoc compiles it now is wire compatible with the baseline",
    .enabled(if: Protoc.isInstalled, Protoc.skipReason)
  )
  func currentProtosAreCompatible() throws {
    let baseline = try Repo.descriptorSet(at: Repo.baselineDescriptorSet)
    let current = try Protoc.currentDescriptorSet()
    let problems = wireIncompatibilities(baseline: baseline, current: current)
    #expect(
      problems.isEmpty,
      "wire-incompatible change to proto/ (restore it, or reserve removed numbers):\n\(problems.joined(separator: "\n"))"
    )
  }

  /// End to end through protoc: edits of a copy of proto/ are judged against the real baseline.
  @Test(
    "edits to a copy of proto/ are judged correctly",
    .enabled(if: Protoc.isInstalled, Protoc.skipReason),
    arguments: ProtoEdit.all
  )
  func editsOfRealProtos(_ edit: ProtoEdit) throws {
    let baseline = try Repo.descriptorSet(at: Repo.baselineDescriptorSet)
    let current = try withProtoCopy(edit: { try replaceInProto($0, edit.file, edit.old, edit.new) })
    {
      try Protoc.currentDescriptorSet(root: $0)
    }
    let problems = wireIncompatibilities(baseline: baseline, current: current)
    if let expected = edit.expected {
      #expect(problems.count == 1, "\(problems)")
      #expect(problems.first?.contains(expected) == true, "\(problems)")
    } else {
      #expect(problems == [])
    }
  }

  /// Runs without protoc; the staleness test ties generated.binpb to proto/.
  @Test("proto/generated.binpb is wire compatible with the baseline")
  func committedDescriptorSetIsCompatible() throws {
    let baseline = try Repo.descriptorSet(at: Repo.baselineDescriptorSet)
    let committed = try Repo.descriptorSet(at: Repo.committedDescriptorSet)
    let problems = wireIncompatibilities(baseline: baseline, current: committed)
    #expect(problems.isEmpty, "\(problems.joined(separator: "\n"))")
  }

  @Test("the baseline covers the protocol: the CNI plugin's messages and methods are in it")
  func baselineIsNotEmpty() throws {
    let baseline = try Repo.descriptorSet(at: Repo.baselineDescriptorSet)
    let names = Set(baseline.file.map(\.name))
    for file in [
      "tessera/endpoint/v1/endpoint.proto", "tessera/common/v1/common.proto",
      "grpc/health/v1/health.proto",
    ] {
      #expect(names.contains(file), "\(file) missing from proto/baseline.binpb")
    }
    let endpoint = try #require(
      baseline.file.first { $0.name == "tessera/endpoint/v1/endpoint.proto" })
    let service = try #require(endpoint.service.first { $0.name == "EndpointService" })
    #expect(service.method.contains { $0.name == "CreateEndpoint" })
  }

  /// The checker walks the real descriptors (packages, nested enums, services) correctly.
  @Test("breaking the real baseline is detected", arguments: RealBreak.all)
  func realBreaksAreDetected(_ change: RealBreak) throws {
    let baseline = try Repo.descriptorSet(at: Repo.baselineDescriptorSet)
    var current = baseline
    try change.mutate(&current)
    let problems = wireIncompatibilities(baseline: baseline, current: current)
    #expect(problems.count == 1, "\(problems)")
    #expect(problems.first?.contains(change.expected) == true, "\(problems)")
  }

  @Test("each kind of break is detected", arguments: SyntheticChange.breaks)
  func breaksAreDetected(_ change: SyntheticChange) {
    let baseline = Fixture.set()
    var current = baseline
    change.mutate(&current)
    #expect(current != baseline, "the mutation changed nothing")
    let problems = wireIncompatibilities(baseline: baseline, current: current)
    #expect(problems.count == 1, "\(problems)")
    let problem = problems.first ?? ""
    #expect(problem.contains(change.expected), "\(problem)")
  }

  @Test("compatible changes are accepted", arguments: SyntheticChange.compatible)
  func compatibleChangesAreAccepted(_ change: SyntheticChange) {
    let baseline = Fixture.set()
    var current = baseline
    change.mutate(&current)
    #expect(wireIncompatibilities(baseline: baseline, current: current) == [])
  }

  @Test("several breaks are all reported")
  func severalBreaksAreAllReported() {
    let baseline = Fixture.set()
    var current = baseline
    current.file[0].messageType[1].field.removeAll { $0.name == "id" }
    current.file[0].service[0].method.removeAll { $0.name == "Do" }
    current.file[0].enumType[0].value.removeAll { $0.name == "GONE" }
    let problems = wireIncompatibilities(baseline: baseline, current: current)
    #expect(problems.count == 3, "\(problems)")
  }
}

// MARK: - Synthetic descriptor sets

/// ```proto
/// syntax = "proto3";
/// package test.v1;
/// enum Status { STATUS_UNSPECIFIED = 0; ACTIVE = 1; GONE = 2; }
/// message Label { string key = 1; string value = 2; }
/// message Request {
///   message Inner { uint64 n = 1; }
///   string id = 1;
///   repeated Label labels = 2;
///   Status status = 3;
///   Inner inner = 4;
///   reserved 9 to 10;
/// }
/// message Response { bool ok = 1; }
/// service Svc {
///   rpc Do(Request) returns (Response);
///   rpc Watch(Request) returns (stream Response);
/// }
/// ```
enum Fixture {
  typealias Field = Google_Protobuf_FieldDescriptorProto

  static func field(
    _ name: String, _ number: Int32, _ type: Field.TypeEnum,
    _ label: Field.Label = .optional, typeName: String? = nil
  ) -> Field {
    Field.with {
      $0.name = name
      $0.number = number
      $0.type = type
      $0.label = label
      if let typeName { $0.typeName = typeName }
    }
  }

  static func method(
    _ name: String, _ input: String, _ output: String, serverStreaming: Bool = false
  )
    -> Google_Protobuf_MethodDescriptorProto
  {
    .with {
      $0.name = name
      $0.inputType = input
      $0.outputType = output
      $0.serverStreaming = serverStreaming
    }
  }

  static func set() -> Google_Protobuf_FileDescriptorSet {
    let file = Google_Protobuf_FileDescriptorProto.with {
      $0.name = "test/v1/test.proto"
      $0.package = "test.v1"
      $0.syntax = "proto3"
      $0.enumType = [
        .with {
          $0.name = "Status"
          let values: [(String, Int32)] = [("STATUS_UNSPECIFIED", 0), ("ACTIVE", 1), ("GONE", 2)]
          $0.value = values.map { name, number in
            Google_Protobuf_EnumValueDescriptorProto.with {
              $0.name = name
              $0.number = number
            }
          }
        }
      ]
      $0.messageType = [
        .with {
          $0.name = "Label"
          $0.field = [field("key", 1, .string), field("value", 2, .string)]
        },
        .with {
          $0.name = "Request"
          $0.nestedType = [
            .with {
              $0.name = "Inner"
              $0.field = [field("n", 1, .uint64)]
            }
          ]
          $0.field = [
            field("id", 1, .string),
            field("labels", 2, .message, .repeated, typeName: ".test.v1.Label"),
            field("status", 3, .enum, typeName: ".test.v1.Status"),
            field("inner", 4, .message, typeName: ".test.v1.Request.Inner"),
          ]
          $0.reservedRange = [
            .with {
              $0.start = 9
              $0.end = 11
            }
          ]
        },
        .with {
          $0.name = "Response"
          $0.field = [field("ok", 1, .bool)]
        },
      ]
      $0.service = [
        .with {
          $0.name = "Svc"
          $0.method = [
            method("Do", ".test.v1.Request", ".test.v1.Response"),
            method("Watch", ".test.v1.Request", ".test.v1.Response", serverStreaming: true),
          ]
        }
      ]
    }
    return .with { $0.file = [file] }
  }
}

struct SyntheticChange: Sendable, CustomTestStringConvertible {
  typealias DescriptorSet = Google_Protobuf_FileDescriptorSet

  let name: String
  /// A fragment the single reported problem must contain (breaks only).
  let expected: String
  let mutate: @Sendable (inout DescriptorSet) -> Void

  var testDescription: String { name }

  init(
    _ name: String, expected: String = "",
    _ mutate: @escaping @Sendable (inout DescriptorSet) -> Void
  ) {
    self.name = name
    self.expected = expected
    self.mutate = mutate
  }

  // Indices into Fixture.set(): file 0; enum 0 = Status; messages 0 Label, 1 Request, 2 Response.
  static let breaks: [SyntheticChange] = [
    .init("removed field", expected: "field .test.v1.Request.id = 1 was removed") {
      $0.file[0].messageType[1].field.removeAll { $0.number == 1 }
    },
    .init(
      "removed field in a nested message",
      expected: "field .test.v1.Request.Inner.n = 1 was removed"
    ) {
      $0.file[0].messageType[1].nestedType[0].field = []
    },
    .init("renumbered field", expected: "field .test.v1.Request.id = 1 was renumbered to 5") {
      $0.file[0].messageType[1].field[0].number = 5
    },
    .init("renumbered field into a reserved range is still a break", expected: "renumbered to 9") {
      $0.file[0].messageType[1].field[0].number = 9
    },
    .init(
      "changed scalar type",
      expected: "field .test.v1.Request.id = 1 changed type from string to bytes"
    ) {
      $0.file[0].messageType[1].field[0].type = .bytes
    },
    .init(
      "changed message type name", expected: "changed type from .test.v1.Label to .test.v1.Response"
    ) {
      $0.file[0].messageType[1].field[1].typeName = ".test.v1.Response"
    },
    .init("changed enum type name", expected: "changed type from .test.v1.Status to .test.v1.Other")
    {
      $0.file[0].messageType[1].field[2].typeName = ".test.v1.Other"
    },
    .init("enum field became a message field", expected: "changed type from enum to message") {
      $0.file[0].messageType[1].field[2].type = .message
    },
    .init("repeated field became singular", expected: "changed label from repeated to optional") {
      $0.file[0].messageType[1].field[1].label = .optional
    },
    .init(
      "singular field became repeated", expected: "field .test.v1.Response.ok = 1 changed label"
    ) {
      $0.file[0].messageType[2].field[0].label = .repeated
    },
    .init("removed message", expected: "message .test.v1.Label was removed") {
      $0.file[0].messageType.remove(at: 0)
    },
    .init("removed enum value", expected: "enum value .test.v1.Status.GONE = 2 was removed") {
      $0.file[0].enumType[0].value.removeAll { $0.name == "GONE" }
    },
    .init("renumbered enum value", expected: "enum value .test.v1.Status.GONE = 2 was removed") {
      $0.file[0].enumType[0].value[2].number = 3
    },
    .init("removed enum", expected: "enum .test.v1.Status was removed") {
      $0.file[0].enumType = []
    },
    .init("removed method", expected: "method test.v1.Svc/Do was removed") {
      $0.file[0].service[0].method.removeAll { $0.name == "Do" }
    },
    .init("removed service", expected: "service test.v1.Svc was removed") {
      $0.file[0].service = []
    },
    .init(
      "changed input type",
      expected: "method test.v1.Svc/Do changed input type from .test.v1.Request to .test.v1.Label"
    ) {
      $0.file[0].service[0].method[0].inputType = ".test.v1.Label"
    },
    .init("changed output type", expected: "method test.v1.Svc/Do changed output type") {
      $0.file[0].service[0].method[0].outputType = ".test.v1.Label"
    },
    .init(
      "server streaming removed",
      expected: "method test.v1.Svc/Watch changed server streaming from true to false"
    ) {
      $0.file[0].service[0].method[1].serverStreaming = false
    },
    .init(
      "client streaming added",
      expected: "method test.v1.Svc/Do changed client streaming from false to true"
    ) {
      $0.file[0].service[0].method[0].clientStreaming = true
    },
  ]

  static let compatible: [SyntheticChange] = [
    .init("no change") { _ in },
    .init("added field") {
      $0.file[0].messageType[1].field.append(Fixture.field("sync", 5, .bool))
    },
    .init("added field to a nested message") {
      $0.file[0].messageType[1].nestedType[0].field.append(Fixture.field("m", 2, .string))
    },
    .init("renamed field (same number and type)") {
      $0.file[0].messageType[1].field[0].name = "identifier"
    },
    .init("removed field whose number is reserved") {
      $0.file[0].messageType[1].field.removeAll { $0.number == 1 }
      $0.file[0].messageType[1].reservedRange.append(
        .with {
          $0.start = 1
          $0.end = 2
        })
      $0.file[0].messageType[1].reservedName.append("id")
    },
    .init("added method") {
      $0.file[0].service[0].method.append(
        Fixture.method("Other", ".test.v1.Label", ".test.v1.Label", serverStreaming: true))
    },
    .init("added service") {
      $0.file[0].service.append(
        .with {
          $0.name = "Svc2"
          $0.method = [Fixture.method("Do", ".test.v1.Request", ".test.v1.Response")]
        })
    },
    .init("added message") {
      $0.file[0].messageType.append(
        .with {
          $0.name = "Extra"
          $0.field = [Fixture.field("x", 1, .int32)]
        })
    },
    .init("added enum value") {
      $0.file[0].enumType[0].value.append(
        .with {
          $0.name = "PAUSED"
          $0.number = 3
        })
    },
    .init("messages reordered and moved to another file of the same package") {
      let label = $0.file[0].messageType.remove(at: 0)
      $0.file[0].messageType.reverse()
      $0.file.insert(
        .with {
          $0.name = "test/v1/label.proto"
          $0.package = "test.v1"
          $0.messageType = [label]
        }, at: 0)
    },
  ]
}

/// Breaks applied to the real baseline.
struct RealBreak: Sendable, CustomTestStringConvertible {
  let name: String
  let expected: String
  let mutate: @Sendable (inout Google_Protobuf_FileDescriptorSet) throws -> Void
  var testDescription: String { name }

  static func file(_ set: inout Google_Protobuf_FileDescriptorSet, _ name: String) throws -> Int {
    guard let index = set.file.firstIndex(where: { $0.name == name }) else {
      throw ProtoTestError("\(name) not in the baseline")
    }
    return index
  }

  static let all: [RealBreak] = [
    RealBreak(
      name: "CreateEndpointRequest.sync removed",
      expected: "field .tessera.endpoint.v1.CreateEndpointRequest.sync = 8 was removed"
    ) { set in
      let f = try file(&set, "tessera/endpoint/v1/endpoint.proto")
      let m = try #require(
        set.file[f].messageType.firstIndex { $0.name == "CreateEndpointRequest" })
      set.file[f].messageType[m].field.removeAll { $0.name == "sync" }
    },
    RealBreak(
      name: "Label.value renumbered",
      expected: "field .tessera.common.v1.Label.value = 3 was renumbered to 4"
    ) { set in
      let f = try file(&set, "tessera/common/v1/common.proto")
      let m = try #require(set.file[f].messageType.firstIndex { $0.name == "Label" })
      set.file[f].messageType[m].field[2].number = 4
    },
    RealBreak(
      name: "HealthCheckResponse.ServingStatus.SERVICE_UNKNOWN removed",
      expected:
        "enum value .grpc.health.v1.HealthCheckResponse.ServingStatus.SERVICE_UNKNOWN = 3 was removed"
    ) { set in
      let f = try file(&set, "grpc/health/v1/health.proto")
      let m = try #require(set.file[f].messageType.firstIndex { $0.name == "HealthCheckResponse" })
      set.file[f].messageType[m].enumType[0].value.removeAll { $0.number == 3 }
    },
    RealBreak(
      name: "Health.Watch no longer streams",
      expected: "method grpc.health.v1.Health/Watch changed server streaming from true to false"
    ) { set in
      let f = try file(&set, "grpc/health/v1/health.proto")
      set.file[f].service[0].method[1].serverStreaming = false
    },
    RealBreak(
      name: "EndpointService.GarbageCollectEndpoints removed",
      expected: "method tessera.endpoint.v1.EndpointService/GarbageCollectEndpoints was removed"
    ) { set in
      let f = try file(&set, "tessera/endpoint/v1/endpoint.proto")
      set.file[f].service[0].method.removeAll { $0.name == "GarbageCollectEndpoints" }
    },
  ]
}

/// A textual edit of one real .proto and the problem it must produce (nil: compatible).
struct ProtoEdit: Sendable, CustomTestStringConvertible {
  let name: String
  let file: String
  let old: String
  let new: String
  let expected: String?
  var testDescription: String { name }

  static let endpoint = "tessera/endpoint/v1/endpoint.proto"

  static let all: [ProtoEdit] = [
    ProtoEdit(
      name: "remove CreateEndpointRequest.netns", file: endpoint,
      old:
        "  string netns = 9;\n  // The CNI network (its configuration's \"name\"); garbage collection is per network.",
      new:
        "  // The CNI network (its configuration's \"name\"); garbage collection is per network.",
      expected: "field .tessera.endpoint.v1.CreateEndpointRequest.netns = 9 was removed"),
    ProtoEdit(
      name: "remove CreateEndpointRequest.netns and reserve 9", file: endpoint,
      old:
        "  string netns = 9;\n  // The CNI network (its configuration's \"name\"); garbage collection is per network.",
      new:
        "  reserved 9;\n  reserved \"netns\";\n  // The CNI network (its configuration's \"name\"); garbage collection is per network.",
      expected: nil),
    ProtoEdit(
      name: "widen DeleteEndpointResponse.deleted to uint64", file: endpoint,
      old: "uint32 deleted = 2;", new: "uint64 deleted = 2;",
      expected:
        "field .tessera.endpoint.v1.DeleteEndpointResponse.deleted = 2 changed type from uint32 to uint64"
    ),
    ProtoEdit(
      name: "make CreateEndpointRequest.sync repeated", file: endpoint,
      old: "  bool sync = 8;\n  string netns = 9;",
      new: "  repeated bool sync = 8;\n  string netns = 9;",
      expected: "CreateEndpointRequest.sync = 8 changed label from optional to repeated"),
    ProtoEdit(
      name: "remove ENDPOINT_STATE_RESTORING", file: endpoint,
      old: "  ENDPOINT_STATE_RESTORING = 8;\n", new: "",
      expected:
        "enum value .tessera.endpoint.v1.EndpointState.ENDPOINT_STATE_RESTORING = 8 was removed"),
    ProtoEdit(
      name: "remove rpc GetEndpoint", file: endpoint,
      old: "  rpc GetEndpoint(GetEndpointRequest) returns (Endpoint);\n", new: "",
      expected: "method tessera.endpoint.v1.EndpointService/GetEndpoint was removed"),
    ProtoEdit(
      name: "make ListEndpoints server streaming", file: endpoint,
      old: "returns (ListEndpointsResponse);", new: "returns (stream ListEndpointsResponse);",
      expected: "EndpointService/ListEndpoints changed server streaming from false to true"),
    ProtoEdit(
      name: "add a field, a method and an enum value", file: endpoint,
      old: "  ENDPOINT_STATE_RESTORING = 8;\n}",
      new:
        "  ENDPOINT_STATE_RESTORING = 8;\n  ENDPOINT_STATE_PAUSED = 9;\n}\n\nmessage PingRequest { string note = 1; }\nservice PingService { rpc Ping(PingRequest) returns (PingRequest); }",
      expected: nil),
    ProtoEdit(
      name: "rename Endpoint.pod_name (same number and type)", file: endpoint,
      old: "  string pod_name = 7;\n  // Identity-relevant",
      new: "  string pod = 7;\n  // Identity-relevant",
      expected: nil),
  ]
}
