import Foundation
import LBKit
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The `l4lb` executable itself: flags, errors, signals.
@Suite("The l4lb command")
struct ExecutableTests {
    @Test(
        "a bad flag value is one clear line and a non-zero exit, before anything listens",
        arguments: [
            (["--backend", "127.0.0.1:99999"], "port '99999' is not in 1-65535"),
            (["--backend", "::1:80"], "write IPv6 addresses in brackets"),
            (["--backend", "127.0.0.1:80,weight=0"], "weight '0' is not a whole number in 1-256"),
            (["--backend", "127.0.0.1:80,colour=red"], "unknown attribute 'colour'"),
            (["--backend", "127.0.0.1:80,weight=2,weight=3"], "'weight' is given twice"),
            (["--listen", "nonsense"], "expected host:port"),
            (
                ["--policy", "fastest"],
                "unknown policy 'fastest' (available: geo, least-connections, maglev, round-robin, source-hash)"
            ),
            (["--policy", "round-robin {not json"], "not valid JSON"),
            (
                ["--connect-timeout", "-1s"],
                "The value '-1s' is invalid for '--connect-timeout <duration>' (a duration"
            ),
            (["--idle-timeout", "soon"], "The value 'soon' is invalid for '--idle-timeout <duration>'"),
            (["--connect-timeout", "0"], "--connect-timeout must be more than 0"),
            (["--no-such-flag"], "Unknown option '--no-such-flag'"),
            (["--threads", "two"], "The value 'two' is invalid for '--threads <threads>'"),
            (["--relay-cpus", "3-1"], "--relay-cpus: '3-1' has the range '3-1', which runs backwards"),
            (["--relay-cpus", "1000"], "--relay-cpus: CPU 1000 not available to l4lb (allowed: "),
            (
                ["--relay-slice", "50us"],
                "--relay-slice: '50us' is out of range (0 for the kernel's default, or 100us-100ms)"
            ),
            (["--relay-slice", "soon"], "--relay-slice: 'soon' is not a duration"),
            (["--connect-attempts", "0"], "--connect-attempts must be in 1-100"),
            (["--log-level", "loud"], "--log-level: 'loud' is not one of"),
            (["--redis", "localhost:6379"], "expected redis://"),
            (["--redis-prefix", "blue"], "--redis-prefix needs --redis"),
            (
                ["--listen", "127.0.0.1:18099", "--backend", "127.0.0.1:18099"],
                "backend 127.0.0.1:18099 is l4lb's own listen address 127.0.0.1:18099"
            ),
            (
                ["--listen", "0.0.0.0:18098", "--backend", "127.0.0.1:18098"],
                "backend 127.0.0.1:18098 is l4lb's own listen address"
            ),
        ]
    )
    func badFlag(arguments: [String], expected: String) async throws {
        let process = try L4LBProcess(arguments: ["--listen", "127.0.0.1:0"] + arguments)
        let status = await process.waitForExit(timeoutSeconds: 10)
        process.kill()
        #expect(status == 2)
        let lines = process.text.split(separator: "\n")
        #expect(lines.count == 1, "expected one line, got: \(process.text)")
        #expect(process.text.hasPrefix("l4lb: error: "))
        #expect(process.text.contains(expected), "got: \(process.text)")
    }

    @Test("each relay thread carries its own name, for top -H, ps -L and perf")
    func relayThreadsAreNamed() async throws {
        try await withTestResources { r in
            let backend = try await r.backend(.greet("a"))
            let process = try L4LBProcess(arguments: [
                "--listen", "127.0.0.1:0", "--backend", "127.0.0.1:\(backend.port)", "--threads", "2",
            ])
            r.onStop { process.kill() }
            _ = try #require(await process.listeningPort(), "no listening line in: \(process.text)")
            // The relay threads have started by the time l4lb listens; the name is set first thing.
            let names = await eventually {
                ThreadFacts.threads(of: process.pid).filter { $0.name.hasPrefix("l4lb-relay") }.count == 2
            }
            #expect(names, "threads: \(ThreadFacts.threads(of: process.pid).map(\.name).sorted())")
            #expect(
                Set(ThreadFacts.threads(of: process.pid).map(\.name)).isSuperset(of: ["l4lb-relay-0", "l4lb-relay-1"])
            )
        }
    }

    @Test(
        "--relay-cpus pins relay thread N to the Nth CPU listed ('auto': every CPU allowed), one thread per CPU",
        arguments: [false, true]
    )
    func relayThreadsArePinned(auto: Bool) async throws {
        let allowed = try #require(ThreadScheduling.allowed()).cpus
        // Listed backwards, so that thread N's CPU is not simply N (on a one-CPU machine, that CPU alone).
        let listed = auto ? allowed : allowed.count >= 2 ? [allowed[1], allowed[0]] : [allowed[0]]
        try await withTestResources { r in
            let backend = try await r.backend(.greet("a"))
            let process = try L4LBProcess(arguments: [
                "--listen", "127.0.0.1:0", "--backend", "127.0.0.1:\(backend.port)",
                "--relay-cpus", auto ? "auto" : listed.map(String.init).joined(separator: ","),
            ])
            r.onStop { process.kill() }
            let port = try #require(await process.listeningPort(), "no listening line in: \(process.text)")
            // Without --threads, one relay thread per CPU listed.
            let expected = Dictionary(uniqueKeysWithValues: listed.enumerated().map { ("l4lb-relay-\($0)", "\($1)") })
            #expect(
                await eventually { ThreadFacts.relayThreads(of: process.pid, ThreadFacts.allowedCPUs) == expected },
                "relay threads and their CPUs: \(ThreadFacts.relayThreads(of: process.pid, ThreadFacts.allowedCPUs)); it printed: \(process.text)"
            )
            // Pinned threads still relay.
            #expect(try BlockingClient(port: port).readLine() == "a")
        }
    }

    @Test(
        "--relay-slice gives each relay thread that scheduler slice (300us by default, 0 the kernel's), and relay threads take the nice value l4lb was started with",
        .enabled(if: ThreadFacts.takesCustomSlices, "the kernel takes custom slices from Linux 6.12 (EEVDF)"),
        arguments: [([String](), "300000"), (["--relay-slice", "2ms"], "2000000"), (["--relay-slice", "0"], "")]
    )
    func relayThreadsTakeTheirSlice(arguments: [String], expected: String) async throws {
        try await withTestResources { r in
            let backend = try await r.backend(.greet("a"))
            // Under `nice -n 5`: a relay thread, started from a Dispatch worker (nice 0), must take the
            // process's value, and sched_setattr, which sets the nice value too, must keep it.
            let process = try L4LBProcess(
                arguments: ["-n", "5", L4LBProcess.executableURL.path]
                    + ["--listen", "127.0.0.1:0", "--backend", "127.0.0.1:\(backend.port)", "--threads", "2"]
                    + arguments,
                executable: URL(fileURLWithPath: "/usr/bin/nice")
            )
            r.onStop { process.kill() }
            let port = try #require(await process.listeningPort(), "no listening line in: \(process.text)")
            // "0" leaves the kernel's slice: whatever the process's first thread has.
            let slice =
                expected.isEmpty ? try #require(ThreadFacts.slice(pid: process.pid, task: "\(process.pid)")) : expected
            let wanted = ["l4lb-relay-0": "\(slice) nice 5", "l4lb-relay-1": "\(slice) nice 5"]
            #expect(
                await eventually { ThreadFacts.relayThreads(of: process.pid, ThreadFacts.sliceAndNice) == wanted },
                "relay threads: \(ThreadFacts.relayThreads(of: process.pid, ThreadFacts.sliceAndNice)); it printed: \(process.text)"
            )
            #expect(try BlockingClient(port: port).readLine() == "a")
        }
    }

    @Test("SIGTERM stops accepting at once and lets an open connection finish")
    func sigtermDrains() async throws {
        try await withTestResources { r in
            let backend = try await r.backend(.greet("a"))
            let process = try L4LBProcess(arguments: [
                // Far longer than any step here takes, even with the test process stalled by others
                // (a drain that ran out while the test waited is what a failure here once was); l4lb
                // exits as soon as the connection closes, so the length costs nothing.
                "--listen", "127.0.0.1:0", "--backend", "127.0.0.1:\(backend.port)", "--drain-timeout", "300s",
                // The access log on standard output: if the connection ends early, its line says why.
                "--access-log", "-",
            ])
            r.onStop { process.kill() }
            let port = try #require(await process.listeningPort(), "no listening line in: \(process.text)")

            let open = try BlockingClient(port: port)
            #expect(try open.readLine() == "a")
            process.send(SIGTERM)
            #expect(await eventually { process.text.contains("draining") })
            // New clients are refused...
            #expect(throws: TestFailure.self) { try BlockingClient(port: port) }
            // ...while the open connection still relays both ways.
            try open.send("still here\n")
            #expect(try open.readLine() == "still here", "l4lb: \(process.ending); it printed: \(process.text)")
            #expect(process.isRunning, "l4lb: \(process.ending); it printed: \(process.text)")
            open.shutdownWrite()
            #expect(try open.readToEnd().isEmpty)
            #expect(await process.waitForExit(timeoutSeconds: 10) == 0)
            // The connection's one access-log line: ended by the client, after both lines each way.
            #expect(process.text.contains("reason=client-closed"), "it printed: \(process.text)")
        }
    }

    @Test("after the drain timeout, connections still open are closed and l4lb exits 0")
    func drainTimeoutClosesConnections() async throws {
        try await withTestResources { r in
            let backend = try await r.backend(.greet("a"))
            let process = try L4LBProcess(arguments: [
                "--listen", "127.0.0.1:0", "--backend", "127.0.0.1:\(backend.port)", "--drain-timeout", "300ms",
            ])
            r.onStop { process.kill() }
            let port = try #require(await process.listeningPort(), "no listening line in: \(process.text)")

            let open = try BlockingClient(port: port)
            #expect(try open.readLine() == "a")
            process.send(SIGTERM)
            #expect(open.waitForClose(timeoutSeconds: 10))
            #expect(await process.waitForExit(timeoutSeconds: 10) == 0)
            #expect(process.text.contains("drain timeout reached"))
        }
    }

    @Test("`l4lb ctl` publishes checked messages and shows the pool")
    func controlCommands() async throws {
        try await withTestResources { r in
            let redis = try await r.redis()
            let backend = try await r.backend(.greet("a"))
            let daemon = try L4LBProcess(arguments: [
                "--listen", "127.0.0.1:0", "--backend", "127.0.0.1:\(backend.port)", "--redis", redis.url,
            ])
            r.onStop { daemon.kill() }
            #expect(await daemon.listeningPort() != nil)

            func ctl(_ arguments: [String]) async throws -> (Int32?, String) {
                let process = try L4LBProcess(arguments: ["ctl"] + arguments + ["--redis", redis.url])
                let status = await process.waitForExit(timeoutSeconds: 10)
                process.kill()
                return (status, process.text)
            }
            let added = try await ctl(["add-server", "127.0.0.1:7001,weight=2"])
            #expect(added.0 == 0)
            #expect(added.1.contains("1 l4lb instance listening"))
            #expect(try await ctl(["set-policy", "least-connections"]).0 == 0)
            #expect(await eventually { daemon.text.contains("policy set") })
            let pool = try await ctl(["pool"])
            #expect(pool.1.contains("policy: least-connections"))
            #expect(pool.1.contains("127.0.0.1:7001,weight=2"))
            #expect(try await ctl(["remove-server", "127.0.0.1:7001"]).0 == 0)
            #expect(await eventually { (try? redis.client().pool()) == [backend.spec] })

            let refused = try await ctl(["add-server", "nonsense"])
            #expect(refused.0 == 2)
            #expect(refused.1 == "l4lb: error: addServer: invalid address 'nonsense': expected host:port\n")
        }
    }

    @Test("`l4lb plugins` and `l4lb plugin check` report plugins and refuse bad ones with one line")
    func pluginCommands() async throws {
        let list = try L4LBProcess(arguments: ["plugins"])
        #expect(await list.waitForExit(timeoutSeconds: 10) == 0)
        let abi = "ABI \(PluginLibrary.abiMajor).\(PluginLibrary.abiMinor)"
        #expect(list.text.contains("geo\t\(abi)\t"))
        #expect(list.text.contains("source-hash\t\(abi)\t"))
        // Each plugin's version, named by its content as sha256sum names it.
        let geo = SHA256.hex(try Data(contentsOf: URL(fileURLWithPath: PluginFixtures.library("l4lb-policy-geo"))))
        #expect(list.text.contains("geo\t\(abi)\tsha256 \(geo.prefix(16))\tloaded "), "\(list.text)")

        let database = PluginFixtures.database("GeoIP2-City-Test.mmdb")
        let good = try L4LBProcess(arguments: [
            "plugin", "check", PluginFixtures.library("l4lb-policy-geo"), #"{"database": "\#(database)"}"#,
        ])
        #expect(await good.waitForExit(timeoutSeconds: 10) == 0)
        #expect(good.text.contains("client 81.2.69.160 -> 10.0.0.1:80"))
        #expect(good.text.hasSuffix("ok\n"))

        for (fixture, message) in [
            ("l4lb-fixture-bad-abi", "built for plugin ABI 99.0"),
            ("l4lb-fixture-no-entry", "no l4lb_policy_entry symbol"),
            ("l4lb-fixture-create-fails", "fixture refuses every configuration"),
            ("l4lb-fixture-bad-index", "picks answered an invalid index"),
        ] {
            let check = try L4LBProcess(arguments: ["plugin", "check", PluginFixtures.library(fixture)])
            #expect(await check.waitForExit(timeoutSeconds: 10) == 2)
            let errors = check.text.split(separator: "\n").filter { $0.hasPrefix("l4lb: error: ") }
            #expect(errors.count == 1 && errors[0].contains(message), "got: \(check.text)")
        }
    }

    @Test("l4lb runs the geo plugin named by --policy, behind a PROXY-protocol sender")
    func geoFromTheCommandLine() async throws {
        try await withTestResources { r in
            let gb = try await r.backend(.greet("gb"))
            let other = try await r.backend(.greet("other"))
            let database = PluginFixtures.database("GeoLite2-Country-Test.mmdb")
            let process = try L4LBProcess(arguments: [
                "--listen", "127.0.0.1:0", "--accept-proxy-protocol",
                "--backend", "127.0.0.1:\(gb.port),region=GB", "--backend", "127.0.0.1:\(other.port),region=US",
                "--policy", #"geo {"database": "\#(database)"}"#,
            ])
            r.onStop { process.kill() }
            let port = try #require(await process.listeningPort(), "no listening line in: \(process.text)")
            for _ in 0..<3 {
                #expect(try BlockingClient.greeting(port: port, header: ProxyHeaders.v1("81.2.69.160")) == "gb")
                #expect(try BlockingClient.greeting(port: port, header: ProxyHeaders.v2("216.160.83.56")) == "other")
            }
            #expect(process.text.contains("loaded policy plugin"))
        }
    }

    @Test("the geo plugin reports a refused database in l4lb's own log, as JSON with its name")
    func geoLogsThroughL4LB() async throws {
        try await withTestResources { r in
            let backend = try await r.backend(.greet("any"))
            let directory = try PluginFixtures.makeDirectory()
            r.onStop { try? FileManager.default.removeItem(atPath: directory) }
            let live = "\(directory)/geo.mmdb"
            try FileManager.default.copyItem(
                atPath: PluginFixtures.database("GeoLite2-Country-Test.mmdb"),
                toPath: live
            )
            let process = try L4LBProcess(arguments: [
                "--listen", "127.0.0.1:0", "--log-format", "json", "--backend", "127.0.0.1:\(backend.port)",
                "--policy", #"geo {"database": "\#(live)", "reload_check_seconds": 0.1}"#,
            ])
            r.onStop { process.kill() }
            #expect(await eventually { process.text.contains(#""message":"listening""#) }, "got: \(process.text)")
            let staging = "\(directory)/staging.mmdb"
            try FileManager.default.copyItem(
                atPath: PluginFixtures.database("libmaxminddb-corrupt-search-tree.mmdb"),
                toPath: staging
            )
            #expect(rename(staging, live) == 0)
            let refusal: () -> Substring? = {
                process.text.split(separator: "\n").first { $0.contains("refused the new version") }
            }
            #expect(await eventually { refusal() != nil }, "got: \(process.text)")
            let line = try #require(refusal())
            let json = try #require(
                try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                "not JSON: \(line)"
            )
            #expect(json["level"] as? String == "warning")
            #expect(json["plugin"] as? String == "geo")
            #expect((json["message"] as? String)?.contains("is corrupt") == true)
            #expect(!process.text.contains("l4lb-policy-geo:"))
        }
    }

    @Test("a geo policy with a broken database is refused at start with one line")
    func geoBrokenDatabaseAtStart() async throws {
        let database = PluginFixtures.database("libmaxminddb-deep-nesting.mmdb")
        let process = try L4LBProcess(arguments: [
            "--listen", "127.0.0.1:0", "--policy", #"geo {"database": "\#(database)"}"#,
        ])
        #expect(await process.waitForExit(timeoutSeconds: 10) == 2)
        let errors = process.text.split(separator: "\n").filter { $0.hasPrefix("l4lb: error: ") }
        #expect(errors.count == 1 && errors[0].contains("is corrupt"), "got: \(process.text)")
    }

    @Test("`l4lb policies` lists the built-in policies")
    func listsPolicies() async throws {
        let process = try L4LBProcess(arguments: ["policies"])
        #expect(await process.waitForExit(timeoutSeconds: 10) == 0)
        #expect(process.text.split(separator: "\n").contains("round-robin"))
        #expect(process.text.split(separator: "\n").contains("least-connections"))
    }
}
