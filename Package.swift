// swift-tools-version: 6.1
import PackageDescription

let strictSwift: [SwiftSetting] = [
  .swiftLanguageMode(.v6),
  .enableUpcomingFeature("ExistentialAny"),
]

let grpcCore: Target.Dependency = .product(name: "GRPCCore", package: "grpc-swift-2")
let grpcNIO: Target.Dependency = .product(
  name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport")
let grpcProtobuf: Target.Dependency = .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf")
let swiftProtobuf: Target.Dependency = .product(name: "SwiftProtobuf", package: "swift-protobuf")
let logging: Target.Dependency = .product(name: "Logging", package: "swift-log")
let lifecycle: Target.Dependency = .product(
  name: "ServiceLifecycle", package: "swift-service-lifecycle")
let argumentParser: Target.Dependency = .product(
  name: "ArgumentParser", package: "swift-argument-parser")
let grdb: Target.Dependency = .product(name: "GRDB", package: "GRDB.swift")
let yams: Target.Dependency = .product(name: "Yams", package: "Yams")
let inProcess: Target.Dependency = .product(name: "GRPCInProcessTransport", package: "grpc-swift-2")
let metrics: Target.Dependency = .product(name: "Metrics", package: "swift-metrics")
let prometheus: Target.Dependency = .product(name: "Prometheus", package: "swift-prometheus")
let nioHTTP1: Target.Dependency = .product(name: "NIOHTTP1", package: "swift-nio")
let nioPosix: Target.Dependency = .product(name: "NIOPosix", package: "swift-nio")
let nioCore: Target.Dependency = .product(name: "NIOCore", package: "swift-nio")

let package = Package(
  name: "tessera",
  platforms: [.macOS(.v15)],
  products: [
    .executable(name: "tessera", targets: ["tessera"]),
    .executable(name: "tessera-endpointd", targets: ["tessera-endpointd"]),
    .executable(name: "tessera-identityd", targets: ["tessera-identityd"]),
    .executable(name: "tessera-policyd", targets: ["tessera-policyd"]),
    .executable(name: "tessera-datapathd", targets: ["tessera-datapathd"]),
  ],
  dependencies: [
    .package(url: "https://github.com/grpc/grpc-swift-2.git", from: "2.4.3"),
    .package(url: "https://github.com/grpc/grpc-swift-nio-transport.git", from: "2.9.2"),
    .package(url: "https://github.com/grpc/grpc-swift-protobuf.git", from: "2.4.1"),
    .package(url: "https://github.com/apple/swift-protobuf.git", from: "1.39.0"),
    .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
    .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
    .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
    .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
    .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
    .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
    .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
    .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
    .package(url: "https://github.com/apple/swift-certificates.git", from: "1.21.1"),
  ],
  targets: [
    // Generated protobuf and gRPC code (regenerate with scripts/generate-proto.sh), and
    // Proto+Core.swift: the one place TesseraCore's types are converted to and from the wire.
    .target(
      name: "TesseraProto",
      dependencies: ["TesseraCore", grpcCore, grpcProtobuf, swiftProtobuf],
      swiftSettings: [.swiftLanguageMode(.v6)]
    ),
    // etcd's v3 API client, generated from third_party/etcd (scripts/generate-proto.sh).
    .target(
      name: "EtcdProto",
      dependencies: [grpcCore, grpcProtobuf, swiftProtobuf],
      swiftSettings: [.swiftLanguageMode(.v6)]
    ),
    // A client of etcd clusters: failover across members, lease keepalive, watches.
    .target(
      name: "TesseraEtcd",
      dependencies: ["EtcdProto", "TesseraRuntime", grpcCore, grpcNIO, logging],
      swiftSettings: strictSwift
    ),
    // Domain vocabulary shared by every service: labels, identities, policy entries.
    .target(name: "TesseraCore", dependencies: [], swiftSettings: strictSwift),
    // Process plumbing shared by the daemons: gRPC server/client services, health, logging, locks.
    .target(
      name: "TesseraRuntime",
      dependencies: [
        "TesseraCore", "TesseraProto", grpcCore, grpcNIO, grpcProtobuf, logging, lifecycle,
        argumentParser, metrics, prometheus,
        nioCore, nioHTTP1, nioPosix, .product(name: "X509", package: "swift-certificates"),
      ],
      swiftSettings: strictSwift
    ),
    .target(
      name: "IdentityService",
      dependencies: [
        "TesseraCore", "TesseraEtcd", "TesseraProto", "TesseraRuntime", grpcCore, logging, grdb,
        lifecycle, metrics,
      ],
      swiftSettings: strictSwift
    ),
    .target(
      name: "PolicyService",
      dependencies: [
        "TesseraCore", "TesseraEtcd", "TesseraProto", "TesseraRuntime", grpcCore, logging, grdb,
        yams, metrics,
      ],
      swiftSettings: strictSwift
    ),
    // libbpf loader for the eBPF datapath; the BPF programs in bpf/ are built by scripts/build-bpf.sh.
    .target(
      name: "CTesseraBPF",
      exclude: ["bpf"],
      // libnl (host_addresses.c) installs its headers under libnl3/.
      cSettings: [.unsafeFlags(["-Wall", "-Wextra", "-I/usr/include/libnl3"])],
      linkerSettings: [
        .linkedLibrary("bpf"), .linkedLibrary("elf"), .linkedLibrary("z"),
        .linkedLibrary("nl-3"),
      ]
    ),
    .target(
      name: "DatapathService",
      dependencies: [
        "CTesseraBPF", "TesseraCore", "TesseraProto", "TesseraRuntime", grpcCore, lifecycle,
        logging,
        metrics,
      ],
      swiftSettings: strictSwift
    ),
    // A real etcd cluster (Debian's etcd-server) on loopback, for the tests and the etcd benchmarks.
    .target(name: "LocalEtcd", dependencies: [], swiftSettings: strictSwift),
    // The layout of `tessera node up --cluster` (ports, directories, namespaces, pins, pod helper).
    .target(name: "LocalCluster", dependencies: [], swiftSettings: strictSwift),
    // Shares endpoint addresses between nodes through etcd, so each node's ipcache knows remote pods.
    .target(
      name: "ClusterIPCache",
      dependencies: ["TesseraCore", "TesseraEtcd", "TesseraRuntime", logging, metrics],
      swiftSettings: strictSwift
    ),
    // Namespace and workload labels stored once for the cluster, in etcd.
    .target(
      name: "ClusterMetadata",
      dependencies: ["EndpointService", "TesseraCore", "TesseraEtcd", grpcCore, logging],
      swiftSettings: strictSwift
    ),
    .target(
      name: "EndpointService",
      dependencies: [
        "TesseraCore", "TesseraProto", "TesseraRuntime", grpcCore, lifecycle, logging, metrics,
      ],
      swiftSettings: strictSwift
    ),
    .executableTarget(
      name: "tessera-identityd",
      dependencies: [
        "IdentityService", "TesseraEtcd", "TesseraRuntime", argumentParser, lifecycle, metrics,
      ],
      swiftSettings: strictSwift
    ),
    .executableTarget(
      name: "tessera-policyd",
      dependencies: [
        "PolicyService", "TesseraEtcd", "TesseraRuntime", argumentParser, lifecycle, metrics,
      ],
      swiftSettings: strictSwift
    ),
    .executableTarget(
      name: "tessera-datapathd",
      dependencies: ["DatapathService", "TesseraRuntime", argumentParser, metrics],
      swiftSettings: strictSwift
    ),
    .executableTarget(
      name: "tessera-endpointd",
      dependencies: [
        "ClusterIPCache", "ClusterMetadata", "EndpointService", "TesseraEtcd", "TesseraRuntime",
        argumentParser,
        lifecycle,
      ],
      swiftSettings: strictSwift
    ),
    .executableTarget(
      name: "tessera",
      dependencies: [
        "LocalCluster", "LocalEtcd", "TesseraCore", "TesseraEtcd", "TesseraProto", "TesseraRuntime",
        grpcCore, grpcNIO,
        argumentParser,
      ],
      swiftSettings: strictSwift
    ),
    // Benchmarks against floors measured in the same run; writes BENCHMARKS.md (scripts/bench.sh).
    .executableTarget(
      name: "tessera-bench",
      dependencies: [
        "DatapathService", "IdentityService", "PolicyService", "TesseraCore", "TesseraEtcd",
        "TesseraProto",
        "LocalEtcd", "TesseraRuntime", grpcCore, grpcNIO, argumentParser, logging,
      ],
      swiftSettings: strictSwift
    ),
    .testTarget(
      name: "TesseraCoreTests", dependencies: ["TesseraCore"], swiftSettings: strictSwift),
    .testTarget(
      name: "TesseraProtoTests",
      dependencies: ["TesseraProto", "TesseraCore", swiftProtobuf],
      swiftSettings: strictSwift
    ),
    .testTarget(
      name: "IdentityServiceTests",
      dependencies: [
        "IdentityService", "LocalEtcd", "TesseraCore", "TesseraEtcd", "TesseraRuntime", grpcCore,
      ],
      swiftSettings: strictSwift
    ),
    .testTarget(
      name: "PolicyServiceTests",
      dependencies: ["PolicyService", "TesseraCore"],
      swiftSettings: strictSwift
    ),
    .testTarget(
      name: "DatapathServiceTests",
      dependencies: ["DatapathService", "TesseraCore", "TesseraProto"],
      swiftSettings: strictSwift
    ),
    .testTarget(
      name: "EndpointServiceTests",
      dependencies: [
        "EndpointService", "IdentityService", "PolicyService", "DatapathService", "TesseraCore",
        "TesseraProto", "TesseraRuntime", grpcCore, inProcess,
      ],
      swiftSettings: strictSwift
    ),
    .testTarget(
      name: "LocalClusterTests", dependencies: ["LocalCluster"], swiftSettings: strictSwift),
    .testTarget(
      name: "ClusterIPCacheTests",
      dependencies: ["ClusterIPCache", "TesseraCore"],
      swiftSettings: strictSwift
    ),
    .testTarget(
      name: "IntegrationTests",
      dependencies: [
        "LocalEtcd", "TesseraCore", "TesseraProto", "TesseraRuntime", grpcCore, grpcNIO,
      ],
      swiftSettings: strictSwift
    ),
  ]
)
