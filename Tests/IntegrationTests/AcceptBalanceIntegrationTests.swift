import LBKit
import Testing

@testable import l4lb

/// Relay threads share the clients evenly, even when the kernel wakes one thread for every client.
@Suite("Accept balance between relay threads")
struct AcceptBalanceIntegrationTests {
    @Test(
        "with one listening socket for both threads, clients accepted one by one end up half on each; all relay"
    )
    func sharedListenerIsBalanced() async throws {
        try await withTestResources { r in
            let backend = try await r.backend(.greet("a"))
            // --max-connections makes both threads watch one socket (EPOLLEXCLUSIVE), which wakes
            // the same idle thread for each client in turn: without hand-overs one thread takes all.
            let proxy = try await r.l4lb(backends: [backend.spec], ["--threads", "2", "--max-connections", "1000"])
            var clients: [BlockingClient] = []
            for _ in 0..<20 {
                let client = try BlockingClient(port: proxy.port)
                #expect(try client.readLine() == "a")
                clients.append(client)
            }
            let perThread = proxy.proxy.connectionsPerThread
            #expect(perThread.count == 2 && perThread.reduce(0, +) == 20, "\(perThread)")
            #expect((perThread.max() ?? 0) - (perThread.min() ?? 0) <= 2, "\(perThread)")
            #expect(proxy.proxy.acceptHandOvers > 0)
            // Handed-over clients are relayed like any other.
            for (index, client) in clients.enumerated() {
                try client.send("line \(index)\n")
                #expect(try client.readLine() == "line \(index)")
            }
            clients.removeAll()
            #expect(await eventually { proxy.proxy.connectionsPerThread == [0, 0] })
            #expect(await eventually { proxy.proxy.activeConnections == 0 })
        }
    }
}
