#if canImport(Glibc)
import Glibc
#endif

/// Bytes waiting to be written to one socket, and, while a backend is on trial, the bytes already
/// written to it, kept for a replay to another backend.
///
/// Layout: `[start, sent)` written but kept, `[sent, end)` not yet written. Storage is allocated
/// only when bytes must wait (a socket that would not take them, a backend still connecting, a
/// trial) and freed as soon as the queue is empty, so an idle connection holds none.
///
/// A non-copyable struct over malloc'd memory, not a class: it lives in a relay slot, two copies can
/// never free one buffer, and the buffer is freed when the queue is dropped (the slot reset), so no
/// path that ends a connection can leak it.
struct ByteQueue: ~Copyable {
    private var storage: UnsafeMutableRawPointer?
    private var capacity = 0
    private var start = 0
    private var sent = 0
    private var end = 0

    /// Smallest allocation: a typical request fits, and a partial 64 KiB write needs one growth at most.
    private static let minimumCapacity = 2048

    init() {}

    deinit {
        free(self.storage)
    }

    /// Bytes not yet written.
    var unsentCount: Int { self.end - self.sent }
    /// Bytes held, written or not.
    var storedCount: Int { self.end - self.start }
    var hasUnsent: Bool { self.end > self.sent }

    /// The bytes not yet written.
    var unsent: UnsafeRawBufferPointer {
        guard let storage = self.storage else { return UnsafeRawBufferPointer(start: nil, count: 0) }
        return UnsafeRawBufferPointer(start: storage + self.sent, count: self.end - self.sent)
    }

    mutating func append(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count > 0, let source = bytes.baseAddress else { return }
        self.reserve(bytes.count)
        (self.storage! + self.end).copyMemory(from: source, byteCount: bytes.count)
        self.end += bytes.count
    }

    /// `count` unsent bytes were written; forget them unless `keep` (a trial).
    mutating func markSent(_ count: Int, keep: Bool) {
        precondition(count >= 0 && count <= self.unsentCount, "marked more bytes sent than were queued")
        self.sent += count
        if !keep {
            self.start = self.sent
            self.releaseIfEmpty()
        }
    }

    /// Forgets the bytes kept for a replay.
    mutating func dropSent() {
        self.start = self.sent
        self.releaseIfEmpty()
    }

    /// Makes every kept byte unsent again, for a replay to another backend.
    mutating func rewind() {
        self.sent = self.start
    }

    /// Removes the first `count` unsent bytes without writing them (a consumed PROXY header).
    mutating func discardFront(_ count: Int) {
        precondition(self.start == self.sent && count <= self.unsentCount, "discarding kept or missing bytes")
        self.start += count
        self.sent += count
        self.releaseIfEmpty()
    }

    /// Frees the storage now.
    mutating func release() {
        self = ByteQueue()
    }

    /// Whether the queue holds a buffer (for the leak checks of the tests).
    var holdsStorage: Bool { self.storage != nil }

    private mutating func releaseIfEmpty() {
        if self.start == self.end, self.storage != nil {
            self.release()
        }
    }

    private mutating func reserve(_ extra: Int) {
        if self.end + extra <= self.capacity { return }
        let stored = self.end - self.start
        if let storage = self.storage, self.start > 0, stored + extra <= self.capacity {
            // Room at the front: move the stored bytes down instead of growing.
            memmove(storage, storage + self.start, stored)
        } else {
            var capacity = max(self.capacity, Self.minimumCapacity)
            while capacity < stored + extra { capacity *= 2 }
            guard let grown = malloc(capacity) else {
                fatalError("out of memory: \(capacity) bytes for a relay buffer")
            }
            if let storage = self.storage {
                grown.copyMemory(from: storage + self.start, byteCount: stored)
                free(storage)
            }
            self.storage = grown
            self.capacity = capacity
        }
        self.sent -= self.start
        self.end = stored
        self.start = 0
    }
}
