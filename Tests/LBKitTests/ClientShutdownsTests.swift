import Testing

@testable import LBKit

/// The relay loop's put-off client FINs: each waits exactly one more turn of the loop.
@Suite("Client shutdowns put off by one turn")
struct ClientShutdownsTests {
    @Test("a shutdown put in one turn is due at the end of the next, once; the loop may wait only when none is put off")
    func dueOneTurnLater() {
        var shutdowns = ClientShutdowns()
        #expect(shutdowns.isEmpty)
        var due: [[Int]] = []
        func endTurn() {
            var now: [Int] = []
            shutdowns.due { slot, generation in
                #expect(generation == UInt32(slot) + 100)
                now.append(slot)
            }
            due.append(now)
        }
        shutdowns.put(slot: 1, generation: 101)
        shutdowns.put(slot: 2, generation: 102)
        #expect(!shutdowns.isEmpty)
        endTurn()  // the turn they were put in: not yet
        shutdowns.put(slot: 3, generation: 103)
        endTurn()  // 1 and 2 are due; 3 waits
        #expect(!shutdowns.isEmpty)
        endTurn()  // 3 is due
        endTurn()
        #expect(due == [[], [1, 2], [3], []])
        #expect(shutdowns.isEmpty)
    }
}
