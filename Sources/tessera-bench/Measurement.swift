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
  var target: String
}

func format(_ value: Double) -> String {
  if value.isNaN { return "n/a" }
  if value >= 100 { return String(format: "%.0f", value) }
  if value >= 10 { return String(format: "%.1f", value) }
  return String(format: "%.3f", value)
}

/// Runs a program and returns its wall time, exit status and stdout.
func timedExec(
  _ path: String, _ arguments: [String] = [], environment: [String: String] = [:],
  stdin: Data? = nil
) throws -> (Duration, Int32, Data) {
  let process = Process()
  process.executableURL = URL(fileURLWithPath: path)
  process.arguments = arguments
  process.environment = environment
  let input = Pipe()
  let output = Pipe()
  process.standardInput = input
  process.standardOutput = output
  process.standardError = FileHandle.nullDevice
  let clock = ContinuousClock()
  let start = clock.now
  try process.run()
  if let stdin { input.fileHandleForWriting.write(stdin) }
  try input.fileHandleForWriting.close()
  let data = output.fileHandleForReading.readDataToEndOfFile()
  process.waitUntilExit()
  return (clock.now - start, process.terminationStatus, data)
}

/// `timedExec` of a whole command line.
func timedExec(_ command: [String]) throws -> (Duration, Int32, Data) {
  try timedExec(command[0], Array(command.dropFirst()))
}
