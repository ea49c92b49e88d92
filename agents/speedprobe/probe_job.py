"""The probe: a cubic-time loop over data from a fresh random seed.

This module is sent to workers as a job like any other (its source is the
package's module). ``probe`` multiplies two n x n matrices built from the
seed, modulo a prime, and returns a checksum of the product: n**3
multiply-adds that no worker can skip, and an answer it cannot guess.
"""

MODULUS = 2_147_483_647


def matrices(seed: int, n: int, multiplier: int = 48271, cap: int = 1000):
    value = seed % MODULUS or 1
    rows = []
    for _ in range(2 * n):
        row = []
        for _ in range(n):
            value = (value * multiplier) % MODULUS
            row.append(value % cap)
        rows.append(row)
    return rows[:n], rows[n:]


def probe(state):
    # a canary draws its own multiplier, cap and mix (agents/speedprobe/disguise.py); a probe uses these
    n, seed, mix = state["n"], state["seed"], state.get("mix", 31)
    a, b = matrices(seed, n, state.get("multiplier", 48271), state.get("cap", 1000))
    columns = list(zip(*b))
    checksum = 0
    for row in a:
        for column in columns:
            total = 0
            for x, y in zip(row, column):
                total += x * y
            checksum = (checksum * mix + total) % MODULUS
    return checksum
