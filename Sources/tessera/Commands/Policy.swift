import ArgumentParser
import Foundation
import GRPCCore
import TesseraProto
import TesseraRuntime

struct PolicyCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "policy", abstract: "Import, inspect and delete network policies.",
    subcommands: [
      PolicyImport.self, PolicyList.self, PolicyGet.self, PolicyDelete.self,
      PolicyTraceCommand.self,
    ])
}

/// `NAME` or `NAMESPACE/NAME`; cluster-wide policies have no namespace.
struct PolicyName: ParsableArguments {
  @Argument(help: "Policy name, as NAME or NAMESPACE/NAME.") var name: String
  @Option(name: [.short, .long], help: "Namespace (default: default; '' for cluster-wide).")
  var namespace: String?

  var parts: (namespace: String, name: String) { Self.split(name, namespace: namespace) }

  static func split(_ name: String, namespace: String?) -> (namespace: String, name: String) {
    if let slash = name.firstIndex(of: "/") {
      return (String(name[..<slash]), String(name[name.index(after: slash)...]))
    }
    return (namespace ?? "default", name)
  }
}

struct PolicyImport: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "import", abstract: "Import CiliumNetworkPolicy / NetworkPolicy YAML or JSON.")
  @OptionGroup var global: GlobalOptions
  @Argument(help: "Manifest file ('-' for stdin).") var file: String

  func run() async throws {
    let content: Data
    if file == "-" {
      content = FileHandle.standardInput.readDataToEndOfFile()
    } else {
      guard let data = FileManager.default.contents(atPath: file) else {
        throw CLIError("cannot read \(file)")
      }
      content = data
    }
    let source = (file as NSString).lastPathComponent
    let response = try await global.withClient(.policy) { client, options in
      try await Tessera_Policy_V1_PolicyService.Client(wrapping: client).importPolicy(
        .with {
          $0.sourceName = source
          $0.content = content
        }, options: options)
    }
    if global.output == .json {
      try printJSON([
        "revision": Int(response.revision),
        "policies": response.policies.map {
          ["namespace": $0.namespace, "name": $0.name, "kind": $0.kind]
        },
      ])
    } else {
      for policy in response.policies {
        print(
          "imported \(policy.kind) \(policy.namespace.isEmpty ? "" : policy.namespace + "/")\(policy.name)"
        )
      }
      print("revision \(response.revision)")
    }
  }
}

extension Tessera_Policy_V1_Policy {
  var json: [String: Any] {
    var object: [String: Any] = [
      "namespace": ref.namespace, "name": ref.name, "kind": ref.kind, "revision": Int(revision),
      "rules": Int(ruleCount),
    ]
    if let data = sourceJson.data(using: .utf8),
      let source = try? JSONSerialization.jsonObject(with: data)
    {
      object["source"] = source
    }
    return object
  }
}

struct PolicyList: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "list", abstract: "List policies and the repository revision.")
  @OptionGroup var global: GlobalOptions

  func run() async throws {
    let response = try await global.withClient(.policy) { client, options in
      try await Tessera_Policy_V1_PolicyService.Client(wrapping: client).listPolicies(
        .init(), options: options)
    }
    if global.output == .json {
      try printJSON(["revision": Int(response.revision), "policies": response.policies.map(\.json)])
    } else {
      print("revision: \(response.revision)")
      printTable(
        ["NAMESPACE", "NAME", "KIND", "RULES", "REVISION"],
        response.policies.map {
          [$0.ref.namespace, $0.ref.name, $0.ref.kind, String($0.ruleCount), String($0.revision)]
        })
    }
  }
}

struct PolicyGet: AsyncParsableCommand {
  static let configuration = CommandConfiguration(commandName: "get", abstract: "Show one policy.")
  @OptionGroup var global: GlobalOptions
  @OptionGroup var policy: PolicyName

  func run() async throws {
    let (namespace, name) = policy.parts
    let response = try await global.withClient(.policy) { client, options in
      try await Tessera_Policy_V1_PolicyService.Client(wrapping: client).getPolicy(
        .with {
          $0.namespace = namespace
          $0.name = name
        }, options: options)
    }
    if global.output == .json {
      try printJSON(response.json)
    } else {
      print(
        "\(response.ref.kind) \(namespace.isEmpty ? "" : namespace + "/")\(name) (revision \(response.revision), \(response.ruleCount) rules)"
      )
      print(response.sourceJson)
    }
  }
}

struct PolicyDelete: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "delete",
    abstract: "Delete a policy, every policy (--all) or those a label selector matches (-l).",
    discussion: """
      --all and --selector delete everything they select in one revision (one etcd
      transaction with a cluster store), optionally in one namespace (-n; '' for the
      cluster-wide policies). The selector is Kubernetes' syntax over the policy's
      metadata.labels and the labels Cilium derives for it (io.cilium.k8s.policy.name,
      io.cilium.k8s.policy.namespace, io.cilium.k8s.policy.derived-from):
        tessera policy delete -l 'team=payments,env notin (prod)'
      A selection that matches nothing deletes nothing and succeeds.
      """)
  @OptionGroup var global: GlobalOptions
  @Argument(help: "Policy name, as NAME or NAMESPACE/NAME.") var name: String?
  @Option(
    name: [.short, .long],
    help: "Namespace (default for a NAME: default; with --all/--selector: every namespace).")
  var namespace: String?
  @Flag(help: "Delete every policy (of --namespace when given).")
  var all = false
  @Option(
    name: [.customShort("l"), .customLong("selector")],
    help: "Delete the policies whose labels match.")
  var selector: String?

  func validate() throws {
    guard [name != nil, all, selector != nil].filter({ $0 }).count == 1 else {
      throw ValidationError("give a policy name, --all or --selector: exactly one")
    }
  }

  func run() async throws {
    let response = try await global.withClient(.policy) { client, options in
      try await Tessera_Policy_V1_PolicyService.Client(wrapping: client).deletePolicy(
        .with {
          if let name {
            let target = PolicyName.split(name, namespace: namespace)
            $0.namespace = target.namespace
            $0.name = target.name
          } else {
            $0.all = all
            $0.labelSelector = selector ?? ""
            if let namespace {
              $0.namespace = namespace
              $0.hasNamespace_p = true
            }
          }
        }, options: options)
    }
    let deleted = response.deleted.map {
      $0.namespace.isEmpty ? $0.name : "\($0.namespace)/\($0.name)"
    }
    if global.output == .json {
      try printJSON(["revision": Int(response.revision), "deleted": deleted])
    } else if deleted.isEmpty {
      print("no policies to delete")
    } else {
      print("deleted \(deleted.joined(separator: ", ")); revision \(response.revision)")
    }
  }
}

struct Selectors: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Show the SelectorCache: each selector and the identities it selects.")
  @OptionGroup var global: GlobalOptions

  func run() async throws {
    let response = try await global.withClient(.policy) { client, options in
      try await Tessera_Policy_V1_PolicyService.Client(wrapping: client).listSelectors(
        .init(), options: options)
    }
    if global.output == .json {
      try printJSON([
        "selectors": response.selectors.map {
          [
            "selector": $0.selector, "identities": $0.identities.map(Int.init),
            "users": Int($0.users),
          ]
        }
      ])
    } else {
      printTable(
        ["SELECTOR", "USERS", "IDENTITIES"],
        response.selectors.map {
          [$0.selector, String($0.users), $0.identities.map(String.init).joined(separator: ",")]
        })
    }
  }
}
