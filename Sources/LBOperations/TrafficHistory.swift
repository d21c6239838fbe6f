import Foundation
import LBKit
import NIOConcurrencyHelpers

/// The last five minutes of traffic, per backend, one sample a second: new connections and bytes
/// (both ways) in that second. What the status page draws.
///
/// `sample(_:)` is fed the router's pool once a second (by the admin endpoint's timer); rates are
/// the differences of the backends' counters between two samples. Bounded: 300 samples per backend,
/// and a backend that leaves the pool leaves the history.
public final class TrafficHistory: Sendable {
    public static let length = 300

    public struct Series: Codable, Sendable, Equatable {
        public var backend: String
        /// Oldest first, one per second.
        public var connections: [Int]
        public var bytes: [Int]
    }

    private struct State {
        var last: [String: (connections: Int, bytes: Int)] = [:]
        var series: [String: Series] = [:]
    }

    private let state = NIOLockedValueBox(State())

    public init() {}

    /// Takes one sample of `pool`'s counters.
    public func sample(_ pool: BackendPool) {
        self.state.withLockedValue { state in
            var present = Set<String>()
            for backend in pool.backends {
                let name = backend.address.description
                present.insert(name)
                let counters = backend.counters
                let now = (counters.totalConnections, counters.bytesFromClients + counters.bytesFromBackend)
                let previous = state.last[name] ?? now
                state.last[name] = now
                var series = state.series[name] ?? Series(backend: name, connections: [], bytes: [])
                series.connections.append(max(0, now.0 - previous.connections))
                series.bytes.append(max(0, now.1 - previous.bytes))
                if series.connections.count > Self.length {
                    series.connections.removeFirst(series.connections.count - Self.length)
                    series.bytes.removeFirst(series.bytes.count - Self.length)
                }
                state.series[name] = series
            }
            for name in state.series.keys where !present.contains(name) {
                state.series[name] = nil
                state.last[name] = nil
            }
        }
    }

    /// Every backend's series, in name order.
    public var series: [Series] {
        self.state.withLockedValue { $0.series.values.sorted { $0.backend < $1.backend } }
    }
}
