"""Speed benchmarks: the S2AP step's overhead against its base and floor, and training/AutoAttack throughput."""
