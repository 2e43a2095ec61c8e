"""Times Python Onionbalance's own code paths on the inputs onionlb-bench
wrote (`onionlb-bench inputs`), the same inputs onionlb's criterion benches
read: building a master descriptor (OBDescriptor, revision counter
included), parsing an instance descriptor (ReceivedDescriptor) and finding
the responsible HSDirs on a ring of 8000 (hashring.get_responsible_hsdirs).

Usage: onionbalance_micro.py INPUTS.json OUT.json [--quick]
Writes {case: median seconds per run}.
"""

import io
import json
import logging
import statistics
import sys
import time

import stem.descriptor
from cryptography.hazmat.backends import default_backend
from cryptography.hazmat.primitives import serialization
from stem.descriptor.hidden_service import HiddenServiceDescriptorV3
from stem.descriptor.networkstatus import NetworkStatusDocumentV3

from onionbalance.hs_v3 import consensus as ob_consensus
from onionbalance.hs_v3 import descriptor as ob_descriptor
from onionbalance.hs_v3 import hashring
from onionbalance.hs_v3.onionbalance import my_onionbalance

SIZES = [2, 6, 20]
RUN_LENGTH = 24 * 3600


class PinnedConsensus(ob_consensus.Consensus):
    """Onionbalance's consensus object holding our synthetic consensus, with
    the start of the shared-random runs placed so that "now" falls at the
    point being measured (the revision counter's cost depends on it)."""

    def __init__(self, text):
        super().__init__(do_refresh_consensus=False)
        self.consensus = NetworkStatusDocumentV3(text.encode(), validate=False)
        self.seconds_into_run = 0

    def is_live(self):
        return True

    def get_start_time_of_current_srv_run(self):
        return int(time.time()) - self.seconds_into_run

    def get_start_time_of_previous_srv_run(self):
        return self.get_start_time_of_current_srv_run() - RUN_LENGTH


class Microdescriptors:
    """Stands in for the stem controller's get_microdescriptors()."""

    def __init__(self, text):
        self.mds = list(stem.descriptor.parse_file(
            io.BytesIO(text.encode()), 'microdescriptor 1.0', validate=False))

    def get_microdescriptors(self):
        return iter(self.mds)


class Controller:
    def __init__(self, controller):
        self.controller = controller


def median_seconds(run, quick):
    """Median of timed runs: at least 3 (1 when quick), and for at least 2 s."""
    run()  # warm up
    times = []
    started = time.perf_counter()
    while len(times) < (1 if quick else 3) or (not quick and time.perf_counter() - started < 2):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main():
    inputs_path, out_path = sys.argv[1], sys.argv[2]
    quick = '--quick' in sys.argv[3:]
    with open(inputs_path) as f:
        inputs = json.load(f)

    # Its code paths, not its log output: warnings only (the lowest cost).
    logging.getLogger('onionbalance').setLevel(logging.WARNING)
    my_onionbalance.is_testnet = False
    consensus = PinnedConsensus(inputs['consensus'])
    my_onionbalance.consensus = consensus
    my_onionbalance.controller = Controller(Microdescriptors(inputs['microdescs']))
    consensus.nodes = consensus._initialize_nodes()

    key = serialization.load_pem_private_key(
        inputs['master_pem'].encode(), password=None, backend=default_backend())
    master_address = HiddenServiceDescriptorV3.address_from_identity_key(key.public_key())
    instance = inputs['instance_address'].replace('.onion', '')
    results = {}

    for point in inputs['points']:
        consensus.seconds_into_run = point['unix'] - point['run_start']
        period = (point['unix'] // 60 - 12 * 60) // (24 * 60)
        blinding = consensus.get_blinding_param(
            ob_descriptor.HiddenServiceDescriptorV3.identity_key_from_address(master_address),
            period)
        for size, text in zip(SIZES, point['instance_descriptors']):
            name = f"{point['name']}/{size}"
            results[f"parse_instance/{name}"] = median_seconds(
                lambda: ob_descriptor.ReceivedDescriptor(text, instance), quick)
            intro_points = ob_descriptor.ReceivedDescriptor(text, instance).get_intro_points()
            assert len(intro_points) == size, (size, len(intro_points))
            results[f"build_master/{name}"] = median_seconds(
                lambda: ob_descriptor.OBDescriptor(
                    master_address, key, blinding, list(intro_points), True), quick)
            print(f"{name}: build {results[f'build_master/{name}']:.4f} s, "
                  f"parse {results[f'parse_instance/{name}']:.4f} s", file=sys.stderr)

    assert len(consensus.nodes) == 8000, len(consensus.nodes)
    blinded = ob_descriptor.OBDescriptor(
        master_address, key, blinding, [], True).get_blinded_key()
    results["hsdir_ring/8000"] = median_seconds(
        lambda: hashring.get_responsible_hsdirs(blinded, True), quick)
    print(f"ring: {results['hsdir_ring/8000']:.4f} s", file=sys.stderr)

    with open(out_path, 'w') as f:
        json.dump(results, f, indent=1)


if __name__ == '__main__':
    main()
