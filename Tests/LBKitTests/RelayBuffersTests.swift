import Testing

@testable import LBKit

@Suite("Relay buffers and timers")
struct RelayBuffersTests {
    @Test("a byte queue sends in order, keeps sent bytes on request, rewinds and drops them")
    func byteQueue() {
        var queue = ByteQueue()
        defer { queue.release() }
        let first: [UInt8] = Array(0..<100)
        first.withUnsafeBytes { queue.append($0) }
        #expect(queue.unsentCount == 100)
        queue.markSent(30, keep: true)
        #expect(queue.unsentCount == 70)
        #expect(queue.storedCount == 100)
        #expect(Array(queue.unsent) == Array(first[30...]))
        queue.rewind()
        #expect(Array(queue.unsent) == first)
        queue.markSent(60, keep: true)
        queue.dropSent()
        #expect(queue.storedCount == 40)
        #expect(Array(queue.unsent) == Array(first[60...]))
        queue.markSent(40, keep: false)
        #expect(!queue.hasUnsent)
        #expect(queue.storedCount == 0)
    }

    @Test("a byte queue grows past its first allocation and moves bytes down instead of growing when it can")
    func byteQueueGrowth() {
        var queue = ByteQueue()
        defer { queue.release() }
        let chunk = [UInt8](repeating: 7, count: 1500)
        for _ in 0..<10 { chunk.withUnsafeBytes { queue.append($0) } }
        #expect(queue.unsentCount == 15_000)
        queue.markSent(14_000, keep: false)
        let tail: [UInt8] = Array(0..<200)
        tail.withUnsafeBytes { queue.append($0) }
        #expect(Array(queue.unsent) == [UInt8](repeating: 7, count: 1000) + tail)
        queue.discardFront(1000)
        #expect(Array(queue.unsent) == tail)
    }

    @Test("deadline lists expire in deadline order, restart moves to the tail, stop removes from the middle")
    func deadlines() {
        var lists = DeadlineLists(proxyHeader: nil, connect: 100, idle: 1000)
        lists.grow(to: 8)
        #expect(lists.nextDeadline == nil)
        lists.start(.idle, slot: 0, now: 0)
        lists.start(.idle, slot: 1, now: 10)
        lists.start(.idle, slot: 2, now: 20)
        lists.start(.connect, slot: 3, now: 50)
        // A PROXY header timeout is off: nothing is queued for it.
        lists.start(.proxyHeader, slot: 4, now: 0)
        #expect(lists.kind(of: 4) == nil)
        #expect(lists.nextDeadline == 150)
        lists.restart(slot: 0, now: 500)
        lists.stop(slot: 1)
        #expect(lists.popExpired(now: 149) == nil)
        #expect(lists.popExpired(now: 2000)! == (3, .connect))
        #expect(lists.popExpired(now: 2000)! == (2, .idle))
        #expect(lists.popExpired(now: 2000)! == (0, .idle))
        #expect(lists.popExpired(now: 2000) == nil)
        #expect(lists.nextDeadline == nil)
    }
}
