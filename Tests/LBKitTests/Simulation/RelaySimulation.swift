import Foundation
import Logging
import NIOCore
import NIOEmbedded
import Policies

@testable import LBKit

/// One seeded run of the relay on the simulated kernel: the seed chooses the scenario (threads,
/// listeners, PROXY headers, limits, timeouts, backends' behaviours, clients, faults) and every
/// ordering within it, so the same seed replays the same run, call for call.
///
/// The loops are turned one at a time by this driver: a loop with events ready is turned (one chosen
/// by the generator when several are); when none is, the clock moves to the next thing that happens
/// (a peer's act, or the earliest wake-up a loop asked for) and the world acts. After every turn the
/// invariants are checked (`SimulatedNetwork`, and the timer and charge checks here).
final class RelaySimulation {
    struct Outcome {
        var seed: UInt64
        var violations: [String]
        var scenario: String
        var turns = 0
        var clients = 0
        var backendConnections = 0
        var staleEvents = 0
    }

    let seed: UInt64
    let plantedBugs: Set<RelayLoop<SimulatedKernel>.PlantedBug>

    init(seed: UInt64, plantedBugs: Set<RelayLoop<SimulatedKernel>.PlantedBug> = []) {
        self.seed = seed
        self.plantedBugs = plantedBugs
    }

    private static let basePort = 30000
    private static let start: UInt64 = 1_000_000_000
    /// A run that has not settled after this much virtual time has a connection nobody ends.
    private static let limit: UInt64 = 300_000_000_000
    private static let maximumTurns = 200_000

    func run() -> Outcome {
        var random = SimulationRandom(seed: self.seed)
        let milliseconds: (ClosedRange<Int>) -> UInt64 = { UInt64(random.int($0)) * 1_000_000 }

        // The scenario.
        let threads = random.chance(0.3) ? 2 : 1
        let proxyHeader: UInt64? = random.chance(0.3) ? milliseconds(50...1500) : nil
        let connect = milliseconds(20...1500)
        let idle = milliseconds(100...4000)
        let maxConnections: Int? = random.chance(0.2) ? random.int(1...3) : nil
        let sharedListener = maxConnections != nil || random.chance(0.5)
        let behaviors = (0..<random.int(1...4)).map { _ -> SimulatedNetwork.BackendBehavior in
            random.chance(0.55) ? .echo : SimulatedNetwork.BackendBehavior.allCases.randomElement(using: &random)!
        }
        var faults = SimulatedFaults.none
        if random.chance(0.6) {
            faults.interrupted = random.chance(0.5) ? 0.05 : 0
            faults.acceptOutOfFiles = random.chance(0.3) ? 0.1 : 0
            faults.acceptAborted = random.chance(0.3) ? 0.1 : 0
            faults.socketOutOfFiles = random.chance(0.3) ? 0.1 : 0
            faults.connectNoFreePort = random.chance(0.3) ? 0.15 : 0
            faults.epollControlFails = random.chance(0.3) ? 0.05 : 0
            faults.spuriousEvent = random.chance(0.3) ? 0.1 : 0
        }
        let connectAttempts = random.int(1...4)
        let retryOnReset = random.chance(0.85)
        let maxPending = random.chance(0.3) ? random.int(16...4096) : 256 * 1024
        let useLeastConnections = random.chance(0.5)
        let clientCount = random.int(1...10)
        let stopAt: UInt64? = random.chance(0.15) ? Self.start + milliseconds(0...4000) : nil
        let drainAt: UInt64? = random.chance(0.1) ? Self.start + milliseconds(0...4000) : nil
        let tick: UInt64 = [0, 1_000_000, 5_000_000, 20_000_000].randomElement(using: &random)!

        let scenario =
            "threads=\(threads) listener=\(sharedListener ? "shared" : "per-thread") proxy-header=\(proxyHeader.map { "\($0 / 1_000_000)ms" } ?? "off") "
            + "connect=\(connect / 1_000_000)ms idle=\(idle / 1_000_000)ms max-connections=\(maxConnections.map(String.init) ?? "-") "
            + "attempts=\(connectAttempts) retry-on-reset=\(retryOnReset) kept=\(maxPending) "
            + "policy=\(useLeastConnections ? "least-connections" : "round-robin") backends=\(behaviors) clients=\(clientCount) "
            + "stop=\(stopAt != nil) drain=\(drainAt != nil) tick=\(tick / 1_000_000)ms faults=\(faults)"
        var outcome = Outcome(seed: self.seed, violations: [], scenario: scenario)

        // The kernel and the world.
        let kernel = SimulatedKernel(random: SimulationRandom(seed: random.next()), faults: faults)
        let network = SimulatedNetwork(
            kernel: kernel,
            settings: .init(proxyHeader: proxyHeader, connect: connect, idle: idle),
            behaviors: behaviors,
            basePort: Self.basePort
        )
        kernel.network = network
        network.tracing = ProcessInfo.processInfo.environment["SIMULATION_TRACE"] != nil
        kernel.clock = Self.start
        network.tick = tick

        // l4lb's side: a router and health on an embedded loop whose clock follows the kernel's.
        let logger = Logger(label: "simulation") { _ in SwiftLogNoOpLogHandler() }
        let router = Router(policy: useLeastConnections ? LeastConnectionsPolicy() : RoundRobinPolicy())
        let specs = behaviors.indices.map {
            BackendSpec(address: HostAndPort(host: "127.0.0.1", port: Self.basePort + $0))
        }
        guard (try? router.setPool(specs)) != nil else {
            outcome.violations.append("the simulation could not set its pool")
            return outcome
        }
        let embedded = EmbeddedEventLoop()
        let healthy: Set<Int> = Set(
            behaviors.indices.filter { [.echo, .answerThenReset, .closeWithoutAnswer].contains(behaviors[$0]) }
        )
        let health = HealthChecker(
            router: router,
            settings: HealthSettings(probeInterval: .milliseconds(200), jitter: { $0 }),
            loop: embedded,
            instance: "simulation",
            logger: logger,
            probe: { address, loop, _ in
                let index = (address.port ?? 0) - Self.basePort
                return healthy.contains(index)
                    ? loop.makeSucceededFuture(()) : loop.makeFailedFuture(ChannelError.connectTimeout(.seconds(1)))
            }
        )
        let configuration = ProxyConfiguration(
            listen: [],
            connectTimeout: .nanoseconds(Int64(connect)),
            idleTimeout: .nanoseconds(Int64(idle)),
            maxConnections: maxConnections,
            connectAttempts: connectAttempts,
            retryOnReset: retryOnReset,
            relayThreads: threads,
            relaySlice: nil,
            maxPendingBytes: maxPending,
            acceptProxyProtocol: proxyHeader.map { .nanoseconds(Int64($0)) }
        )
        let shared = RelayShared(
            router: router,
            health: health,
            logger: logger,
            observers: [],
            configuration: configuration
        )
        var loops: [RelayLoop<SimulatedKernel>] = []
        for index in 0..<threads {
            guard
                let loop = try? RelayLoop(
                    name: "sim-\(index)",
                    kernel: kernel,
                    shared: shared,
                    configuration: configuration
                )
            else {
                outcome.violations.append("the simulation could not make a relay loop")
                return outcome
            }
            #if DEBUG
            loop.plantedBugs = self.plantedBugs
            #endif
            loops.append(loop)
        }
        let local = RawSocketAddress(try! SocketAddress(ipAddress: "127.0.0.1", port: 8080))
        var listenerSockets: [SimulatedSocket] = []
        for loop in loops where listenerSockets.isEmpty || !sharedListener {
            let socket = kernel.makeSocket(.listener)
            let fd = kernel.install(socket)
            listenerSockets.append(socket)
            if sharedListener {
                for each in loops {
                    each.adopt(listener: RelayListener(fd: fd, local: local, wildcard: false, shared: true))
                }
            } else {
                loop.adopt(listener: RelayListener(fd: fd, local: local, wildcard: false, shared: false))
            }
        }
        network.listeners = listenerSockets
        shared.listenersShared(by: loops.count)
        for loop in loops { loop.siblings = loops.filter { $0 !== loop } }

        for _ in 0..<clientCount {
            let large = random.chance(0.1)
            network.addClient(
                at: Self.start + milliseconds(0...3000),
                listener: listenerSockets.randomElement(using: &random)!,
                proxyHeader: proxyHeader != nil,
                bodyLength: large ? random.int(20_000...100_000) : random.int(0...3000),
                resetAt: random.chance(0.15) ? Self.start + milliseconds(0...5000) : nil
            )
        }
        if let stopAt {
            let target = random.int(0...loops.count - 1)
            network.at(stopAt) { loops[target].post(.stop) }
        }
        if let drainAt {
            network.at(drainAt) { for loop in loops { loop.post(.closeAll) } }
        }

        // The run.
        var ended: Set<ObjectIdentifier> = []
        var turnsWithoutTime = 0
        func turn(_ loop: RelayLoop<SimulatedKernel>) {
            network.trace("turn of \(loop.name)")
            loop.turn()
            outcome.turns += 1
            if !loop.isRunning, !ended.contains(ObjectIdentifier(loop)) {
                ended.insert(ObjectIdentifier(loop))
                loop.end()
            }
            embedded.run()
            self.check(network: network, router: router, into: &outcome)
        }
        while outcome.violations.isEmpty, network.violations.isEmpty {
            let running = loops.filter { !ended.contains(ObjectIdentifier($0)) }
            let ready = running.filter { kernel.hasReadyEvents($0.pollerDescriptor) }
            if let loop = ready.randomElement(using: &random) {
                turnsWithoutTime += 1
                if turnsWithoutTime > 10_000 {
                    network.violation("10,000 turns without the clock moving: a loop spins")
                    break
                }
                turn(loop)
                continue
            }
            let wakes = running.compactMap { loop in kernel.pollerWake(loop.pollerDescriptor) }
            if let due = running.first(where: { (kernel.pollerWake($0.pollerDescriptor) ?? .max) <= kernel.clock }) {
                turnsWithoutTime += 1
                if turnsWithoutTime > 10_000 {
                    network.violation("10,000 turns without the clock moving: a loop spins")
                    break
                }
                turn(due)
                continue
            }
            guard let next = ([network.nextEventTime].compactMap { $0 } + wakes).min() else { break }
            if next > Self.start + Self.limit || outcome.turns > Self.maximumTurns {
                network.violation("the run did not settle: \(outcome.turns) turns, still open: \(network.openSummary)")
                break
            }
            turnsWithoutTime = 0
            kernel.clock = max(kernel.clock, next)
            embedded.advanceTime(to: .uptimeNanoseconds(kernel.clock))
            network.runDue()
            self.check(network: network, router: router, into: &outcome)
        }

        // Liveness, where nothing excuses a failure: no faults, no stop or drain, no PROXY header,
        // backends that either serve or fail before answering, every backend within the attempts,
        // every body within the replay limit, an idle timeout longer than any pause.
        let everyoneServed =
            faults == .none && stopAt == nil && drainAt == nil && proxyHeader == nil && retryOnReset
            && connectAttempts >= behaviors.count && behaviors.contains(.echo) && idle > 1_000_000_000
            && behaviors.allSatisfy { [.echo, .refuse, .blackhole, .resetBeforeAnswer].contains($0) }
        if outcome.violations.isEmpty, network.violations.isEmpty, everyoneServed {
            for client in network.clients where client.resetAt == nil && client.body.count <= maxPending {
                if client.ended != .endOfStream || client.sentByL4LB != client.body.count {
                    network.violation(
                        "client #\(client.index) was not served: ended \(client.ended.map { "\($0)" } ?? "never") with \(client.sentByL4LB) of its \(client.body.count) bytes back, though a backend could serve it"
                    )
                }
            }
        }
        if outcome.violations.isEmpty, network.violations.isEmpty {
            self.checkSettled(network: network, shared: shared, loops: loops, ended: ended)
            // Then every loop is stopped: nothing may be left open.
            for loop in loops where !ended.contains(ObjectIdentifier(loop)) {
                loop.post(.stop)
                // A turn may be interrupted, or its batch may leave the wake-up for the next one.
                for _ in 0..<100 where loop.isRunning { loop.turn() }
                if loop.isRunning { network.violation("a loop did not stop on .stop within 100 turns") }
                loop.end()
            }
            let left = kernel.openFiles
            if !left.isEmpty {
                network.violation(
                    "descriptors left open after every loop ended: \(left.map { "\($0.kind)#\($0.serial)" })"
                )
            }
        }
        outcome.violations += network.violations
        outcome.clients = network.clients.count
        outcome.backendConnections = network.connections.count
        outcome.staleEvents = shared.staleEventCount
        for loop in loops { loop.siblings = [] }
        try? embedded.syncShutdownGracefully()
        return outcome
    }

    /// The checks made after every step: what backends were charged, and every timer's bound.
    private func check(network: SimulatedNetwork, router: Router, into outcome: inout Outcome) {
        let now = network.now
        let slack = network.settings.slack
        for backend in router.pool.backends {
            let index = backend.address.port - Self.basePort
            if backend.counters.connectFailures > network.ownFailures[index] {
                network.violation(
                    "backend \(index) (\(network.behaviors[index])) was charged \(backend.counters.connectFailures) failures; it had \(network.ownFailures[index])"
                )
            }
        }
        for client in network.clients {
            guard let accepted = client.acceptedAt, client.socket.fd != nil else { continue }
            // A header completed after the deadline but before the loop woke for it may be taken:
            // the bound is the deadline plus the timer's slack.
            if let limit = network.settings.proxyHeader, !client.header.isEmpty,
                (client.headerCompleteAt ?? .max) > accepted + limit + slack, now > accepted + limit + slack
            {
                network.violation(
                    "client #\(client.index) without a whole PROXY header is still open \((now - accepted) / 1_000_000) ms after it was accepted"
                )
            }
        }
        for connection in network.connections where connection.socket.fd != nil {
            if connection.socket.connectState == .connecting,
                now > connection.socket.openedAt + network.settings.connect + slack
            {
                network.violation(
                    "connect #\(connection.index) is still pending \((now - connection.socket.openedAt) / 1_000_000) ms after it started"
                )
            }
        }
        if let idle = network.settings.idle {
            for client in network.clients where client.socket.fd != nil && client.acceptedAt != nil {
                let carriers = client.carriers.filter { $0.socket.fd != nil && $0.establishedAt != nil }
                guard !carriers.isEmpty else { continue }
                let last = carriers.map { max($0.socket.lastTraffic, $0.establishedAt!) }.max()!
                let quiet = max(last, client.socket.lastTraffic)
                if now > quiet + idle + slack {
                    network.violation(
                        "client #\(client.index) has been quiet \((now - quiet) / 1_000_000) ms, past the idle timeout, and is still open"
                    )
                }
            }
        }
    }

    /// The checks at the end, once nothing more happens.
    private func checkSettled(
        network: SimulatedNetwork,
        shared: RelayShared,
        loops: [RelayLoop<SimulatedKernel>],
        ended: Set<ObjectIdentifier>
    ) {
        for client in network.clients where client.ended == nil {
            network.violation(
                "client #\(client.index) never ended (l4lb end \(client.socket.fd == nil ? "closed" : "open"))"
            )
        }
        if shared.activeCount != 0 { network.violation("\(shared.activeCount) connections still counted as open") }
        for loop in loops where !ended.contains(ObjectIdentifier(loop)) {
            if loop.load.load(ordering: .relaxed) != 0 {
                network.violation("loop \(loop.name) still counts \(loop.load.load(ordering: .relaxed)) clients")
            }
            for index in 0..<loop.slots.count {
                if loop.slots[index].inUse { network.violation("slot \(index) of \(loop.name) still in use") }
                if loop.slots[index].toBackend.holdsStorage || loop.slots[index].toClient.holdsStorage {
                    network.violation("slot \(index) of \(loop.name) still holds a buffer")
                }
            }
        }
        let streams = network.kernel.openFiles.filter { $0.kind == .stream }
        if !streams.isEmpty { network.violation("sockets left open: \(streams.map(\.serial))") }
    }
}

extension SimulatedKernel {
    /// When the loop on `poller` asked to wake: now after events, nil for "on events only".
    func pollerWake(_ poller: Int32) -> UInt64? {
        self.openFiles.first { $0.fd == poller && $0.kind == .poller }?.wakeAt
    }
}

extension SimulatedNetwork {
    /// What is still open, for a run that did not settle.
    var openSummary: String {
        let clients = self.clients.filter { $0.ended == nil }.map { client in
            "client #\(client.index) (sent \(client.headerSent)+\(client.bodySent) of \(client.header.count)+\(client.body.count), fin \(client.finSent), l4lb sent \(client.sentByL4LB))"
        }
        let sockets = self.kernel.openFiles.filter { $0.kind == .stream }.map { socket in
            "socket #\(socket.serial) fd \(socket.fd ?? -1) \(socket.peer.map { "\($0)" } ?? "-") \(socket.connectState) in \(socket.inbound.count)/\(socket.inboundCapacity) out \(socket.outbound.count)/\(socket.outboundCapacity) peer-fin \(socket.peerFinished) peer-reset \(socket.peerReset) shut \(socket.writeShut) registrations \(socket.registrations.map { "\($0.pending)" })"
        }
        return (clients + sockets).joined(separator: "; ")
    }
}
