import Testing

@testable import LBKit

@Suite("Descriptor hand-over")
struct DescriptorHandOverTests {
    /// Runs `handOver`'s moves on a table of descriptors (number to what it holds), as dup2 would,
    /// then closes from its line up: what the child ends up with.
    static func apply(_ handOver: DescriptorHandOver, to table: [Int32: String]) -> [Int32: String] {
        var table = table
        for move in handOver.moves {
            guard let held = table[move.from] else { return [:] }
            table[move.to] = held
        }
        return table.filter { $0.key < handOver.closeFrom }
    }

    @Test("each passed descriptor ends at 3, 4, 5, ... in order, whatever the numbers, and nothing else from 3 up")
    func renumbers() {
        let cases: [[Int32]] = [[7, 9, 12], [4, 3], [3, 4, 5], [5, 3, 4], [1000], [6, 5, 4, 3], [3]]
        for passed in cases {
            var table: [Int32: String] = [0: "stdin", 1: "stdout", 2: "stderr"]
            // Other descriptors of the parent, on every number around and between the passed ones.
            for fd in Int32(3)...(passed.max()! + 8) { table[fd] = "other \(fd)" }
            for fd in passed { table[fd] = "passed \(fd)" }
            let handOver = DescriptorHandOver(passing: passed)
            var expected: [Int32: String] = [0: "stdin", 1: "stdout", 2: "stderr"]
            for (index, fd) in passed.enumerated() { expected[3 + Int32(index)] = "passed \(fd)" }
            #expect(Self.apply(handOver, to: table) == expected, "\(passed)")
            #expect(passed.map { handOver.childDescriptor(of: $0) } == passed.indices.map { 3 + Int32($0) })
        }
    }

    @Test("no move writes over a passed descriptor before it has been moved")
    func movesNeverClobber() {
        let handOver = DescriptorHandOver(passing: [5, 3, 4, 9])
        var pending = Set(handOver.passed)
        for move in handOver.moves {
            pending.remove(move.from)
            #expect(!pending.contains(move.to), "\(move.from) -> \(move.to)")
        }
    }

    @Test("nothing passed: no move, and everything from 3 up is closed")
    func nothingPassed() {
        let handOver = DescriptorHandOver(passing: [])
        #expect(handOver.moves.isEmpty)
        #expect(handOver.closeFrom == 3)
        #expect(handOver.childDescriptor(of: 3) == nil)
    }
}
