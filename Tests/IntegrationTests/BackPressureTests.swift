import Foundation
import LBKit
import Testing

@testable import l4lb

#if canImport(Glibc)
import Glibc
#endif

/// A client that uploads faster than its backend reads must be slowed down by TCP, not buffered by
/// l4lb: what l4lb accepts from the client is bounded by socket buffers plus a few of its own.
@Suite("Back-pressure")
struct BackPressureTests {
    @Test("a backend that stops reading stops l4lb reading from the client; nothing is lost when it resumes")
    func stalledBackendBoundsBuffering() async throws {
        try await withTestResources { r in
            let backend = try await r.backend(.stalled)
            let proxy = try await r.l4lb(backends: [backend.spec])

            let client = try BlockingClient(port: proxy.port)
            let total = 256 << 20
            // Push until the kernel stops taking bytes for a full second (or everything went in).
            let accepted = pushUntilBlocked(fd: client.fd, total: total, stallSeconds: 1)
            // Loopback socket buffers top out near 4 MiB (send) and 6 MiB (receive) per socket, four
            // sockets in a row: 20 MiB. Without back-pressure l4lb would have swallowed all 256 MiB.
            #expect(accepted < 40 << 20, "l4lb took \(accepted >> 20) MiB from a client whose backend is not reading")
            #expect(accepted < total)

            backend.resumeReading()
            let rest = pushUntilBlocked(fd: client.fd, total: (64 << 20) - accepted, stallSeconds: 10)
            client.shutdownWrite()
            #expect(await eventually(timeoutSeconds: 20) { backend.bytesReceived.load(ordering: .relaxed) == 64 << 20 })
            #expect(accepted + rest == 64 << 20)
        }
    }
}

/// Writes zeros without blocking until `total` bytes went in or no progress was possible for
/// `stallSeconds`; returns the bytes written.
private func pushUntilBlocked(fd: Int32, total: Int, stallSeconds: Double) -> Int {
    let chunk = [UInt8](repeating: 0, count: 64 << 10)
    var written = 0
    var lastProgress = Date()
    while written < total, Date().timeIntervalSince(lastProgress) < stallSeconds {
        let count = min(chunk.count, total - written)
        let sent = chunk.withUnsafeBytes { send(fd, $0.baseAddress, count, Int32(MSG_DONTWAIT | MSG_NOSIGNAL)) }
        if sent > 0 {
            written += sent
            lastProgress = Date()
        } else {
            var pfd = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
            _ = poll(&pfd, 1, 50)
        }
    }
    return written
}
