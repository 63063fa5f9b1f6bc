import Foundation

/// Latency samples and what is derived from them.
struct Samples {
  var values: [Double] = []  // milliseconds

  mutating func add(_ duration: Duration) { values.append(duration.milliseconds) }

  func percentile(_ p: Double) -> Double {
    guard !values.isEmpty else { return .nan }
    let sorted = values.sorted()
    return sorted[min(sorted.count - 1, max(0, Int((Double(sorted.count) * p).rounded(.up)) - 1))]
  }

  var p50: Double { percentile(0.50) }
  var p99: Double { percentile(0.99) }
}

extension Duration {
  var milliseconds: Double {
    let (seconds, attoseconds) = components
    return Double(seconds) * 1000 + Double(attoseconds) / 1e15
  }
}

/// One row of the results table: a figure next to its floor.
struct Row {
  var key: String
  var label: String
  var value: Double
  var unit: String
  var floor: String
  /// What the target says, with its source (the issue, or rows of the same run).
  var target: String
  /// The bound the target sets; nil leaves the row unjudged.
  var bound: Bound? = nil
  /// A verdict computed over more than this row's value (e.g. every endpoint count),
  /// which then replaces the comparison with `bound`.
  var judgement: Judgement? = nil

  /// A target's bound on a row's value.
  enum Bound {
    case atMost(Double)
    case atLeast(Double)
    /// A count that must be above zero.
    case positive
  }

  /// Met or missed, and when missed by how much.
  struct Judgement {
    var met: Bool
    /// "value vs target" and the gap, for the *Missed targets* line.
    var shortfall: String
  }

  /// The row's verdict, or nil when it has no target to check.
  var verdict: Judgement? {
    if let judgement { return judgement }
    guard let bound else { return nil }
    let shown = "\(format(value)) \(unit)".trimmingCharacters(in: .whitespaces)
    switch bound {
    case .atMost(let limit):
      return Judgement(
        met: value <= limit,  // NaN (not measured) is never met
        shortfall: "\(shown) vs ≤ \(format(limit)): \(Self.gap(value, limit))")
    case .atLeast(let limit):
      return Judgement(
        met: value >= limit, shortfall: "\(shown) vs ≥ \(format(limit)): \(Self.gap(value, limit))")
    case .positive:
      return Judgement(met: value > 0, shortfall: "\(shown) vs > 0")
    }
  }

  /// "+1.2 (+20 %)": how far `value` is from `limit`.
  static func gap(_ value: Double, _ limit: Double) -> String {
    guard value.isFinite, limit.isFinite else { return "not measured" }
    let difference = value - limit
    let sign = difference >= 0 ? "+" : "−"
    let percent = limit != 0 ? " (\(sign)\(format(abs(difference / limit) * 100)) %)" : ""
    return "\(sign)\(format(abs(difference)))\(percent)"
  }
}

func format(_ value: Double) -> String {
  if value.isNaN { return "n/a" }
  if value >= 100 { return String(format: "%.0f", value) }
  if value >= 10 { return String(format: "%.1f", value) }
  return String(format: "%.3f", value)
}

/// A program run to completion by `execute`.
struct Execution {
  var command: [String]
  /// Wall time from start to exit, stdout read to its end.
  var elapsed: Duration
  var status: Int32
  var output: Data
  /// What it printed on stderr, when `execute` was asked to keep it.
  var errors: Data?

  /// stdout as text; throws ``ToolError`` with stderr when the program exited non-zero.
  @discardableResult
  func checkedOutput() throws -> String {
    guard status == 0 else {
      throw ToolError(
        command: command, status: status, stderr: String(decoding: errors ?? Data(), as: UTF8.self))
    }
    return String(decoding: output, as: UTF8.self)
  }
}

/// Runs a program to completion: the benchmark's one way to start a process.
///
/// - Parameters:
///   - command: the executable's absolute path, then its arguments.
///   - environment: the program's whole environment; nil inherits this process's.
///   - stdin: written to the program's stdin, which is then closed.
///   - keepErrors: keep stderr for ``Execution/checkedOutput()``; otherwise it goes to
///     /dev/null (a program that leaves children holding stderr never blocks the read).
func execute(
  _ command: [String], environment: [String: String]? = nil, stdin: Data? = nil,
  keepErrors: Bool = false
) throws -> Execution {
  let process = Process()
  process.executableURL = URL(fileURLWithPath: command[0])
  process.arguments = Array(command.dropFirst())
  if let environment { process.environment = environment }
  let input = Pipe()
  let output = Pipe()
  let errors = keepErrors ? Pipe() : nil
  process.standardInput = input
  process.standardOutput = output
  process.standardError = errors ?? FileHandle.nullDevice
  let clock = ContinuousClock()
  let start = clock.now
  try process.run()
  if let stdin { input.fileHandleForWriting.write(stdin) }
  try input.fileHandleForWriting.close()
  let out = output.fileHandleForReading.readDataToEndOfFile()
  let err = errors?.fileHandleForReading.readDataToEndOfFile()
  process.waitUntilExit()
  return Execution(
    command: command, elapsed: clock.now - start, status: process.terminationStatus, output: out,
    errors: err)
}
