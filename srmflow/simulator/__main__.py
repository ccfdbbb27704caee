"""``python -m srmflow.simulator``: the same command as ``srmflow sim``."""

from srmflow.simulator.cli import sim

if __name__ == "__main__":
    sim.main(prog_name="python -m srmflow.simulator")
