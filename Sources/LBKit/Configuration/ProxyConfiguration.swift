import Foundation
import NIOCore

/// Everything the data plane needs, with the defaults an operator gets when a flag is not given.
/// Built from the command line in one place (the executable) and by tests directly.
public struct ProxyConfiguration: Sendable {
    /// Addresses to accept clients on; port 0 asks the kernel for a free port (tests use it).
    public var listen: [HostAndPort]
    /// The pool to start with.
    public var backends: [BackendSpec]
    /// Longest wait for a backend's TCP handshake before the client is tried elsewhere.
    public var connectTimeout: TimeAmount
    /// Close a connection after this long with no byte in either direction; nil means never, so long
    /// quiet connections (databases, SSH) are not cut by surprise.
    public var idleTimeout: TimeAmount?
    /// Clients served at once; further clients wait in the kernel's listen queue (as with HAProxy's
    /// maxconn) until one closes. Nil means no limit.
    public var maxConnections: Int?
    /// Backends tried for one client before it is closed (the first pick included).
    public var connectAttempts: Int
    /// A backend that resets a connection before sending a byte counts as a failed connect: move the
    /// client to another backend, replaying what it sent (up to `maxPendingBytes`). Off for services
    /// where a request a backend received but did not answer must never reach a second backend.
    public var retryOnReset: Bool
    /// On shutdown, how long open connections may run on after accepting stopped.
    public var drainTimeout: TimeAmount
    /// Relay threads (`--threads`); one per core by default.
    public var relayThreads: Int
    /// Relay thread N runs only on the Nth CPU of this list (`--relay-cpus`); nil leaves the
    /// threads to the scheduler.
    public var relayCPUs: CPUList?
    /// The scheduler slice each relay thread asks for (`--relay-slice`); nil keeps the kernel's.
    public var relaySlice: SchedulerSlice?
    /// Listen queue length asked of the kernel (capped by net.core.somaxconn).
    public var backlog: Int
    /// Bytes a client may send before its backend connection is up; past this l4lb stops reading
    /// from it until the backend is connected.
    public var maxPendingBytes: Int
    /// Expect a PROXY protocol v1 or v2 header on every client connection, and take the client
    /// address from it; nil means no. The value is how long a client has to send it.
    public var acceptProxyProtocol: TimeAmount?
    /// Send a PROXY protocol header of this version to backends before the client's bytes.
    public var sendProxyProtocol: ProxyProtocolEncoder.Version?
    /// When backends are retired and restored (passive detection is always on).
    public var health: HealthSettings
    /// This instance's name in health events and status: by default host name and process id.
    public var instanceID: String
    /// Listening sockets handed over at start (systemd, or an upgrading l4lb): used for the
    /// `listen` addresses they match, and listened on beside them otherwise.
    public var inheritedListeners: [InheritedListener] = []

    public init(
        listen: [HostAndPort],
        backends: [BackendSpec] = [],
        connectTimeout: TimeAmount = .seconds(3),
        idleTimeout: TimeAmount? = nil,
        maxConnections: Int? = nil,
        connectAttempts: Int = 3,
        retryOnReset: Bool = true,
        drainTimeout: TimeAmount = .seconds(10),
        relayThreads: Int = System.coreCount,
        relayCPUs: CPUList? = nil,
        relaySlice: SchedulerSlice? = .standard,
        backlog: Int = 4096,
        maxPendingBytes: Int = 256 * 1024,
        acceptProxyProtocol: TimeAmount? = nil,
        sendProxyProtocol: ProxyProtocolEncoder.Version? = nil,
        health: HealthSettings = HealthSettings(),
        instanceID: String = ProxyConfiguration.defaultInstanceID
    ) {
        self.listen = listen
        self.backends = backends
        self.connectTimeout = connectTimeout
        self.idleTimeout = idleTimeout
        self.maxConnections = maxConnections
        self.connectAttempts = connectAttempts
        self.retryOnReset = retryOnReset
        self.drainTimeout = drainTimeout
        self.relayThreads = relayThreads
        self.relayCPUs = relayCPUs
        self.relaySlice = relaySlice
        self.backlog = backlog
        self.maxPendingBytes = maxPendingBytes
        self.acceptProxyProtocol = acceptProxyProtocol
        self.sendProxyProtocol = sendProxyProtocol
        self.health = health
        self.instanceID = instanceID
    }

    public static var defaultInstanceID: String {
        "\(ProcessInfo.processInfo.hostName)-\(ProcessInfo.processInfo.processIdentifier)"
    }
}
