import ArgumentParser
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import TesseraRuntime

enum OutputFormat: String, ExpressibleByArgument, CaseIterable {
  /// `wide`: a table with every column in full (e.g. whole container IDs).
  case table, wide, json
}

/// Flags every command takes.
struct GlobalOptions: ParsableArguments {
  @Option(name: .long, help: "Run directory holding the daemons' sockets (env TESSERA_RUN_DIR).")
  var runDir: String = RunDirectory.fromEnvironment.path

  @Option(name: [.short, .long], help: "Output format: table, wide (full columns) or json.")
  var output: OutputFormat = .table

  @Option(name: .long, help: "Seconds to wait for an answer.")
  var timeout: Double = 30

  var runDirectory: RunDirectory { RunDirectory(path: runDir) }

  /// Flags of every command that take a value.
  static let valueFlags: Set<String> = ["--run-dir", "-o", "--output", "--timeout"]

  /// Moves global flags written before the subcommand (`tessera -o json status`)
  /// to the end, where every subcommand accepts them.
  static func movingLeadingGlobals(_ arguments: [String]) -> [String] {
    var leading: [String] = []
    var index = arguments.startIndex
    while index < arguments.endIndex {
      let argument = arguments[index]
      let name = String(argument.split(separator: "=", maxSplits: 1).first ?? "")
      if argument.contains("="), valueFlags.contains(name) {
        leading.append(argument)
        index += 1
      } else if valueFlags.contains(argument), index + 1 < arguments.endIndex {
        leading += [argument, arguments[index + 1]]
        index += 2
      } else {
        break
      }
    }
    return Array(arguments[index...]) + leading
  }

  /// Whether the command line asks for JSON output (for errors, before parsing succeeded).
  static func wantsJSON(_ arguments: [String]) -> Bool {
    zip(arguments, arguments.dropFirst()).contains { flag, value in
      (flag == "-o" || flag == "--output") && value == "json"
    } || arguments.contains { $0 == "--output=json" || $0 == "-ojson" }
  }

  /// Calls one daemon over its socket; an unreachable daemon becomes a clear error naming the socket.
  func withClient<T: Sendable>(
    _ service: TesseraService,
    _ body: @Sendable (GRPCClient<HTTP2ClientTransport.Posix>, CallOptions) async throws -> T
  ) async throws -> T {
    let socket = runDirectory.socketPath(for: service)
    guard FileManager.default.fileExists(atPath: socket) else {
      throw CLIError(
        "the \(service.rawValue) service is not running: no socket at \(socket) (start a node with `tessera node up`)"
      )
    }
    guard access(socket, R_OK | W_OK) == 0 || errno != EACCES else {
      throw CLIError(
        "permission denied: \(socket) (the \(service.rawValue) service's socket is for root and its group; run as root or join the group)"
      )
    }
    let options = CallOptions.failFast(timeout: .milliseconds(Int64(timeout * 1000)))
    do {
      return try await withGRPCClient(
        transport: .http2NIOPosix(
          target: .unixDomainSocket(path: socket), transportSecurity: .plaintext)
      ) { client in
        try await body(client, options)
      }
    } catch let error as RPCError where error.code == .unavailable {
      // Either the socket did not answer or a service behind it is down; both are worth a retry.
      throw CLIError(
        "\(service.rawValue) service (\(socket)) unavailable, try again: \(error.message)")
    } catch let error as RPCError {
      throw CLIError("\(service.rawValue) service: \(error.code): \(error.message)")
    }
  }
}

/// Prints `value` as sorted, indented JSON.
func printJSON(_ value: Any) throws {
  let data = try JSONSerialization.data(
    withJSONObject: value, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
  print(String(decoding: data, as: UTF8.self))
}

/// A failure the CLI explains in one line.
struct CLIError: Error, CustomStringConvertible {
  var description: String
  init(_ description: String) { self.description = description }
}

/// Prints rows as an aligned table.
func printTable(_ header: [String], _ rows: [[String]]) {
  var widths = header.map(\.count)
  for row in rows {
    for (index, cell) in row.enumerated() where index < widths.count {
      widths[index] = max(widths[index], cell.count)
    }
  }
  func line(_ cells: [String]) -> String {
    cells.enumerated().map { index, cell in
      index == cells.count - 1
        ? cell : cell.padding(toLength: widths[index], withPad: " ", startingAt: 0)
    }.joined(separator: "  ")
  }
  print(line(header))
  for row in rows { print(line(row)) }
}
