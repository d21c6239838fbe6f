import Testing

@testable import LBKit

@Suite("Relay buffers and timers")
struct RelayBuffersTests {
    @Test("a byte queue sends in order, keeps sent bytes on request, rewinds and drops them")
    func byteQueue() {
        // Non-copyable: the #expect macro cannot capture it, so each check is evaluated first.
        var queue = ByteQueue()
        let first: [UInt8] = Array(0..<100)
        first.withUnsafeBytes { queue.append($0) }
        let check1 = queue.unsentCount == 100
        #expect(check1)
        queue.markSent(30, keep: true)
        let check2 = queue.unsentCount == 70
        #expect(check2)
        let check3 = queue.storedCount == 100
        #expect(check3)
        let check4 = Array(queue.unsent) == Array(first[30...])
        #expect(check4)
        queue.rewind()
        let check5 = Array(queue.unsent) == first
        #expect(check5)
        queue.markSent(60, keep: true)
        queue.dropSent()
        let check6 = queue.storedCount == 40
        #expect(check6)
        let check7 = Array(queue.unsent) == Array(first[60...])
        #expect(check7)
        queue.markSent(40, keep: false)
        let check8 = !queue.hasUnsent
        #expect(check8)
        let check9 = queue.storedCount == 0
        #expect(check9)
    }

    @Test("a byte queue grows past its first allocation and moves bytes down instead of growing when it can")
    func byteQueueGrowth() {
        var queue = ByteQueue()
        let chunk = [UInt8](repeating: 7, count: 1500)
        for _ in 0..<10 { chunk.withUnsafeBytes { queue.append($0) } }
        let check10 = queue.unsentCount == 15_000
        #expect(check10)
        queue.markSent(14_000, keep: false)
        let tail: [UInt8] = Array(0..<200)
        tail.withUnsafeBytes { queue.append($0) }
        let check11 = Array(queue.unsent) == [UInt8](repeating: 7, count: 1000) + tail
        #expect(check11)
        queue.discardFront(1000)
        let check12 = Array(queue.unsent) == tail
        #expect(check12)
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
