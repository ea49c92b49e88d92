"""The probe: a cubic-time loop over data from a fresh random seed.

This module is sent to workers as a job like any other (its source is the
package's module). ``probe`` multiplies two n x n matrices built from the
seed, modulo a prime, and returns a checksum of the product: n**3
multiply-adds that no worker can skip, and an answer it cannot guess.
"""

MODULUS = 2_147_483_647


def matrices(seed: int, n: int):
    value = seed % MODULUS or 1
    rows = []
    for _ in range(2 * n):
        row = []
        for _ in range(n):
            value = (value * 48271) % MODULUS
            row.append(value % 1000)
        rows.append(row)
    return rows[:n], rows[n:]


def probe(state):
    n, seed = state["n"], state["seed"]
    a, b = matrices(seed, n)
    columns = list(zip(*b))
    checksum = 0
    for row in a:
        for column in columns:
            total = 0
            for x, y in zip(row, column):
                total += x * y
            checksum = (checksum * 31 + total) % MODULUS
    return checksum
