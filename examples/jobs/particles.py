"""Particles bouncing in a box, as a checkpointable job whose state is an object.

The state is a ``Simulation`` (a dataclass defined here) holding
``Particle`` objects and its own seeded random generator. Workers execute
this module under a stable name before loading a checkpoint, so the
objects unpickle on any machine. ``initial_state(args)`` builds the
simulation. Submit it with::

    marketctl submit examples/jobs/particles.py:simulate --name "Particles" --price 3.5 \
        --args '{"particles": 200, "steps": 5000, "seed": 3}'
"""
import random
from dataclasses import dataclass, field

#: simulation steps between two safe points
STEPS_PER_SAFE_POINT = 250
#: time step, and the standard deviation of the random kick each step
DT = 0.01
KICK = 0.05


@dataclass
class Particle:
    x: float
    y: float
    vx: float
    vy: float

    def advance(self, rng: random.Random) -> None:
        """One step: a random kick, a move, a bounce off the walls of the unit box."""
        self.vx += rng.gauss(0.0, KICK)
        self.vy += rng.gauss(0.0, KICK)
        self.x, self.vx = _bounce(self.x + self.vx * DT, self.vx)
        self.y, self.vy = _bounce(self.y + self.vy * DT, self.vy)


@dataclass
class Simulation:
    steps: int
    particles: list = field(default_factory=list)
    step: int = 0
    rng: random.Random = field(default_factory=random.Random)

    def advance(self, count: int) -> None:
        """Advance every particle ``count`` steps (fewer at the end)."""
        for _ in range(min(count, self.steps - self.step)):
            for particle in self.particles:
                particle.advance(self.rng)
            self.step += 1

    def summary(self) -> dict:
        """The result: plain JSON data."""
        count = len(self.particles)
        energy = sum(p.vx * p.vx + p.vy * p.vy for p in self.particles) / 2
        centre = [sum(p.x for p in self.particles) / count, sum(p.y for p in self.particles) / count]
        return {"particles": count, "steps": self.step, "energy": energy, "centre": centre}


def _bounce(position: float, velocity: float) -> tuple[float, float]:
    if position < 0.0:
        return -position, -velocity
    if position > 1.0:
        return 2.0 - position, -velocity
    return position, velocity


def initial_state(args):
    """``{"particles", "steps", "seed"}`` -> a Simulation with particles at random places."""
    args = args or {}
    count, steps = int(args.get("particles", 100)), int(args.get("steps", 1000))
    if count < 1 or steps < 0:
        raise ValueError("particles must be >= 1 and steps >= 0")
    rng = random.Random(args.get("seed", 0))
    particles = [Particle(rng.random(), rng.random(), rng.uniform(-1, 1), rng.uniform(-1, 1)) for _ in range(count)]
    return Simulation(steps=steps, particles=particles, rng=rng)


def simulate(simulation):
    """Yield the Simulation every STEPS_PER_SAFE_POINT steps; return its summary."""
    while simulation.step < simulation.steps:
        simulation.advance(STEPS_PER_SAFE_POINT)
        if simulation.step < simulation.steps:
            yield simulation
    return simulation.summary()
