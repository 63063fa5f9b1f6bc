/// Kubernetes' rules for object names, label keys and label values
/// (`k8s.io/apimachinery/pkg/util/validation`), returning the problem or nil.
enum KubernetesNames {
  private static func isAlphanumeric(_ c: UInt8, upper: Bool) -> Bool {
    (c >= 0x61 && c <= 0x7A) || (c >= 0x30 && c <= 0x39) || (upper && c >= 0x41 && c <= 0x5A)
  }

  /// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most `limit` bytes.
  private static func isDNSLabel(_ text: Substring, limit: Int = 63) -> Bool {
    let bytes = Array(text.utf8)
    guard !bytes.isEmpty, bytes.count <= limit, isAlphanumeric(bytes.first!, upper: false),
      isAlphanumeric(bytes.last!, upper: false)
    else {
      return false
    }
    return bytes.allSatisfy { isAlphanumeric($0, upper: false) || $0 == UInt8(ascii: "-") }
  }

  private static func isDNSSubdomain(_ text: Substring) -> Bool {
    text.utf8.count <= 253
      && text.split(separator: ".", omittingEmptySubsequences: false).allSatisfy { isDNSLabel($0) }
  }

  static func dns1123SubdomainProblem(_ name: String) -> String? {
    if name.isEmpty { return "must not be empty" }
    if isDNSSubdomain(Substring(name)) { return nil }
    return
      "invalid name \"\(name)\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (at most 253 characters)"
  }

  static func dns1123LabelProblem(_ name: String) -> String? {
    if name.isEmpty { return "must not be empty" }
    if isDNSLabel(Substring(name)) { return nil }
    return
      "invalid namespace \"\(name)\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (at most 63 characters)"
  }

  /// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`, 1…63 bytes.
  private static func isQualifiedNamePart(_ text: Substring) -> Bool {
    let bytes = Array(text.utf8)
    guard !bytes.isEmpty, bytes.count <= 63, isAlphanumeric(bytes.first!, upper: true),
      isAlphanumeric(bytes.last!, upper: true)
    else {
      return false
    }
    return bytes.allSatisfy {
      isAlphanumeric($0, upper: true) || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: "_")
        || $0 == UInt8(ascii: ".")
    }
  }

  /// A label key: `[prefix/]name` with a DNS subdomain prefix.
  static func labelKeyProblem(_ key: String) -> String? {
    let parts = key.split(separator: "/", omittingEmptySubsequences: false)
    let valid: Bool
    switch parts.count {
    case 1: valid = isQualifiedNamePart(parts[0])
    case 2: valid = !parts[0].isEmpty && isDNSSubdomain(parts[0]) && isQualifiedNamePart(parts[1])
    default: valid = false
    }
    if valid { return nil }
    return
      "invalid label key \"\(key)\": a name of at most 63 characters (alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric), with an optional DNS subdomain prefix and '/'"
  }

  /// A label value: empty, or 1…63 bytes of `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`.
  static func labelValueProblem(_ value: String) -> String? {
    if value.isEmpty || isQualifiedNamePart(Substring(value)) { return nil }
    return
      "invalid label value \"\(value)\": must be empty or at most 63 characters of alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric"
  }
}
