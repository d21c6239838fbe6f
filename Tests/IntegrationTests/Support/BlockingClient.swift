import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A plain blocking TCP client on a POSIX socket, with a receive and send timeout on every call so
/// that no test can hang: the simplest honest client there is, nothing of l4lb's code in it.
final class BlockingClient: @unchecked Sendable {
    let fd: Int32

    init(port: Int, host: String = "127.0.0.1", timeoutSeconds: Int = 10) throws {
        let address = TestSocketAddress(host: host, port: port)
        let fd = socket(address.family, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw TestFailure("socket: \(String(cString: strerror(errno)))") }
        var timeout = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let result = address.withSockaddr { connect(fd, $0, $1) }
        guard result == 0 else {
            let message = String(cString: strerror(errno))
            Glibc.close(fd)
            throw TestFailure("connect to \(host):\(port): \(message)")
        }
        self.fd = fd
    }

    deinit {
        Glibc.close(self.fd)
    }

    func send(_ bytes: [UInt8]) throws {
        var offset = 0
        while offset < bytes.count {
            let written = bytes[offset...].withUnsafeBytes {
                Glibc.send(self.fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL))
            }
            // A signal to this process (a child's exit) may interrupt the call: it is simply made again.
            if written < 0, errno == EINTR { continue }
            guard written > 0 else { throw TestFailure("send: \(String(cString: strerror(errno)))") }
            offset += written
        }
    }

    func send(_ text: String) throws {
        try self.send(Array(text.utf8))
    }

    /// Sends FIN: the client is done writing but still reads.
    func shutdownWrite() {
        Glibc.shutdown(self.fd, Int32(SHUT_WR))
    }

    /// Reads up to `maximum` bytes; an empty result means EOF. Throws on timeout or error.
    func receive(maximum: Int = 65_536) throws -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: maximum)
        var count = buffer.withUnsafeMutableBytes { recv(self.fd, $0.baseAddress, $0.count, 0) }
        while count < 0, errno == EINTR {
            count = buffer.withUnsafeMutableBytes { recv(self.fd, $0.baseAddress, $0.count, 0) }
        }
        guard count >= 0 else { throw TestFailure("recv: \(String(cString: strerror(errno)))") }
        return Array(buffer.prefix(count))
    }

    /// Reads one line (without its newline); nil at EOF before any byte.
    func readLine() throws -> String? {
        var line: [UInt8] = []
        while true {
            var byte: UInt8 = 0
            let count = recv(self.fd, &byte, 1, 0)
            if count == 0 { return line.isEmpty ? nil : String(decoding: line, as: UTF8.self) }
            if count < 0, errno == EINTR { continue }
            guard count > 0 else { throw TestFailure("recv: \(String(cString: strerror(errno)))") }
            if byte == UInt8(ascii: "\n") { return String(decoding: line, as: UTF8.self) }
            line.append(byte)
        }
    }

    /// Reads exactly `count` bytes; fewer only at EOF.
    func read(count: Int) throws -> [UInt8] {
        var all: [UInt8] = []
        while all.count < count {
            let chunk = try self.receive(maximum: count - all.count)
            if chunk.isEmpty { break }
            all += chunk
        }
        return all
    }

    /// Reads until EOF, at most `limit` bytes.
    func readToEnd(limit: Int = 64 << 20) throws -> [UInt8] {
        var all: [UInt8] = []
        while all.count < limit {
            let chunk = try self.receive()
            if chunk.isEmpty { break }
            all += chunk
        }
        return all
    }

    /// True when the peer has closed (EOF or reset) within `timeoutSeconds`.
    func waitForClose(timeoutSeconds: Double) -> Bool {
        var pfd = pollfd(fd: self.fd, events: Int16(POLLIN), revents: 0)
        let deadline = Date().addingTimeInterval(timeoutSeconds)
        while Date() < deadline {
            let ready = poll(&pfd, 1, 100)
            if ready > 0 {
                var byte: UInt8 = 0
                let count = recv(self.fd, &byte, 1, Int32(MSG_DONTWAIT))
                if count <= 0 { return true }
            }
        }
        return false
    }

    /// One short exchange: connect, read the backend's greeting line, close.
    /// Connects, sends `header` (a PROXY protocol header, say) if any, and returns the first line
    /// the backend sent: the name of a greeting backend.
    static func greeting(port: Int, host: String = "127.0.0.1", header: [UInt8] = []) throws -> String {
        let client = try BlockingClient(port: port, host: host)
        if !header.isEmpty { try client.send(header) }
        guard let line = try client.readLine() else { throw TestFailure("closed before the greeting") }
        return line
    }
}
