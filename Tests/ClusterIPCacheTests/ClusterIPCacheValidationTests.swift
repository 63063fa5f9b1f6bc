import Foundation
import TesseraCore
import Testing

@testable import ClusterIPCache

/// What another node's entry in etcd may and may not make this node's ipcache say.
@Suite("Cluster ipcache validation")
struct ClusterIPCacheValidationTests {
  func value(_ identity: UInt32, node: String = "node-b") -> Data {
    Data(#"{"identity":\#(identity),"node":"\#(node)"}"#.utf8)
  }

  func check(_ key: String, _ value: Data, lease: Int64 = 7) -> Result<
    (IPPrefix, ClusterIPCache.Entry)?, ClusterIPCache.Rejection
  > {
    Result { () throws(ClusterIPCache.Rejection) in
      try ClusterIPCache.validate(key: key, value: value, lease: lease, ownNode: "node-a")
    }
  }

  @Test("a leased host entry of another node with an allocated identity is learned")
  func accepted() throws {
    let v4 = try #require(try check("10.88.2.2/32", value(300)).get())
    #expect(v4.0 == IPPrefix("10.88.2.2/32"))
    #expect(v4.1.identity == 300 && v4.1.node == "node-b")
    #expect(try check("fd00::2/128", value(65535)).get() != nil)
    #expect(
      try check("10.1.0.1/32", value((3 << 16) + 5)).get() != nil, "another cluster's identity")
  }

  @Test(
    "an entry's labels digest names the identity with its labels; entries without one (older nodes) name the number alone"
  )
  func labelsDigest() throws {
    let labels = try LabelSet(parsing: ["k8s:app=web", "k8s:io.kubernetes.pod.namespace=default"])
    let digest = ClusterIPCache.Entry.hex(labels.canonicalDigest)
    #expect(digest.utf8.count == 16)
    let named = Data(#"{"identity":300,"labelsDigest":"\#(digest)","node":"node-b"}"#.utf8)
    let entry = try #require(try check("10.88.2.2/32", named).get()).1
    #expect(
      entry.fingerprint
        == IdentityFingerprint(SecurityIdentity(id: NumericIdentity(300), labels: labels)))
    let old = try #require(try check("10.88.2.2/32", value(300)).get()).1
    #expect(old.fingerprint == IdentityFingerprint(id: NumericIdentity(300), labelsDigest: nil))
    #expect(ClusterIPCache.Entry.hex(1) == "0000000000000001")
  }

  @Test(
    "a release (the holder's last value before it deletes the key) is read as one; other values, older nodes' included, are not; a release that is not a boolean is refused"
  )
  func release() throws {
    let release = Data(#"{"identity":300,"node":"node-b","released":true}"#.utf8)
    #expect(try #require(try check("10.88.2.2/32", release).get()).1.released == true)
    #expect(try #require(try check("10.88.2.2/32", value(300)).get()).1.released == nil)
    let written = ClusterIPCache.Entry(
      identity: 300, labelsDigest: nil, node: "node-b", released: true)
    let encoder = JSONEncoder()
    encoder.outputFormatting = .sortedKeys
    #expect(
      String(decoding: try encoder.encode(written), as: UTF8.self)
        == #"{"identity":300,"node":"node-b","released":true}"#)
    let kept = ClusterIPCache.Entry(identity: 300, labelsDigest: nil, node: "node-b")
    #expect(
      String(decoding: try encoder.encode(kept), as: UTF8.self)
        == #"{"identity":300,"node":"node-b"}"#, "no field in the values every node writes")
    #expect(throws: ClusterIPCache.Rejection.malformedValue) {
      try check("10.88.2.2/32", Data(#"{"identity":300,"node":"node-b","released":"yes"}"#.utf8))
        .get()
    }
  }

  @Test(
    "a labels digest that is not 16 lowercase hex digits is refused",
    arguments: [
      "", "1", "00000000000000001", "000000000000000G", "ABCDEF0123456789", "-000000000000001",
    ])
  func badDigests(digest: String) {
    let value = Data(#"{"identity":300,"labelsDigest":"\#(digest)","node":"node-b"}"#.utf8)
    #expect(throws: ClusterIPCache.Rejection.malformedValue) {
      try check("10.88.2.2/32", value).get()
    }
  }

  @Test("an entry's named ports are learned with it; an entry without any has none")
  func namedPorts() throws {
    let withPorts = Data(
      #"{"identity":300,"namedPorts":[{"name":"http","port":8080,"proto":6},{"name":"dns","port":53,"proto":17}],"node":"node-b"}"#
        .utf8)
    let entry = try #require(try check("10.88.2.2/32", withPorts).get()).1
    #expect(
      entry.namedPorts == [
        NamedPort(name: "http", proto: .tcp, port: 8080),
        NamedPort(name: "dns", proto: .udp, port: 53),
      ])
    #expect(try #require(try check("10.88.2.2/32", value(300)).get()).1.namedPorts == nil)
    // What this node publishes reads back the same, and omits the key without ports.
    let encoder = JSONEncoder()
    encoder.outputFormatting = .sortedKeys
    let published = ClusterIPCache.Entry(
      identity: 300, labelsDigest: nil, node: "node-b",
      namedPorts: [NamedPort(name: "http", port: 8080)])
    let decoded = try #require(try check("10.88.2.2/32", encoder.encode(published)).get()).1
    #expect(decoded == published)
    let bare = String(
      decoding: try encoder.encode(
        ClusterIPCache.Entry(identity: 300, labelsDigest: nil, node: "n")),
      as: UTF8.self)
    #expect(bare == #"{"identity":300,"node":"n"}"#)
  }

  @Test(
    "named ports another node could not have published are refused with the entry",
    arguments: [
      #"[{"name":"HTTP","port":80,"proto":6}]"#,
      #"[{"name":"http","port":0,"proto":6}]"#,
      #"[{"name":"http","port":70000,"proto":6}]"#,
      #"[{"name":"ping","port":8,"proto":1}]"#,
      #"[{"name":"any","port":8,"proto":0}]"#,
      #"[{"name":"http","port":80,"proto":6},{"name":"http","port":81,"proto":6}]"#,
      #"[{"name":"http","port":80}]"#,
      #"{"name":"http","port":80,"proto":6}"#,
      "[" + (1...65).map { #"{"name":"p\#($0)","port":\#($0),"proto":6}"# }.joined(separator: ",")
        + "]",
    ])
  func badNamedPorts(ports: String) {
    let value = Data(#"{"identity":300,"namedPorts":\#(ports),"node":"node-b"}"#.utf8)
    #expect(throws: ClusterIPCache.Rejection.malformedValue) {
      try check("10.88.2.2/32", value).get()
    }
  }

  @Test("this node's own entries are not learned from etcd")
  func own() throws {
    #expect(try check("10.88.1.1/32", value(300, node: "node-a")).get() == nil)
  }

  @Test(
    "prefixes wider than one address, non-canonical keys and addresses no workload owns are refused",
    arguments: [
      ("0.0.0.0/0", ClusterIPCache.Rejection.notAHostPrefix),
      ("10.88.0.0/16", .notAHostPrefix),
      ("::/0", .notAHostPrefix),
      ("10.88.2.2", .malformedKey),
      ("10.88.2.2/24", .malformedKey),
      ("10.88.2.2/32/1", .malformedKey),
      ("not-an-address/32", .malformedKey),
      ("", .malformedKey),
      ("127.0.0.1/32", .specialPurposeAddress),
      ("0.0.0.0/32", .specialPurposeAddress),
      ("224.0.0.1/32", .specialPurposeAddress),
      ("255.255.255.255/32", .specialPurposeAddress),
      ("::1/128", .specialPurposeAddress),
      ("ff02::1/128", .specialPurposeAddress),
    ])
  func badKeys(key: String, reason: ClusterIPCache.Rejection) {
    #expect(throws: reason) { try check(key, value(300)).get() }
  }

  @Test(
    "reserved and node-local identities are refused: no node may make an address host, world or init"
  )
  func reservedIdentities() {
    for identity: UInt32 in [
      0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 255, NumericIdentity.localScope, UInt32.max,
    ] {
      #expect(throws: ClusterIPCache.Rejection.identityNotAllocated(identity)) {
        try check("10.88.2.2/32", value(identity)).get()
      }
    }
  }

  @Test("garbage values and entries without a node or a lease are refused")
  func badValues() {
    for garbage in [
      "", "{", "null", #"{"identity":300}"#, #"{"node":"b"}"#, #"{"identity":-1,"node":"b"}"#,
      #"{"identity":"300","node":"b"}"#, #"{"identity":300,"node":""}"#,
      #"{"identity":300,"node":"a/b"}"#, "[300]",
    ] {
      #expect(throws: ClusterIPCache.Rejection.malformedValue, "\(garbage)") {
        try check("10.88.2.2/32", Data(garbage.utf8)).get()
      }
    }
    #expect(throws: ClusterIPCache.Rejection.notLeased) {
      try check("10.88.2.2/32", value(300), lease: 0).get()
    }
  }
}
