"""Child of tests/test_reliability.py::test_concurrent_load_or_build: race for one artifact.

`race(go, root, log, result)` waits until the file `go` exists (so that all racers start together), then asks
`load_or_build` for the same artifact. The builder appends its pid to `log`, sleeps, and writes tensors seeded by its
pid: were it to run twice, racers would read different bytes. Writes the sha256 of the tensor file it loaded, and who
built it, as JSON to `result`.
"""
import hashlib, json, os, time
from dataclasses import dataclass
from pathlib import Path
import torch
from hyperclip_nb.core import ConfigBase, load_or_build, save_tensors


@dataclass
class RaceConfig(ConfigBase):
    n: int = 4096
    seed: int = 0


def race(go: str, root: str, log: str, result: str):
    def build(cfg, out):
        with open(log, 'a') as f: f.write(f'{os.getpid()}\n')
        time.sleep(0.4)
        x = torch.randn(cfg.n, generator=torch.Generator().manual_seed(os.getpid()))
        save_tensors(out/'x.safetensors', {'x': x})
        return {'builder': os.getpid()}
    t0 = time.time()
    while not Path(go).exists():
        if time.time() - t0 > 60: raise TimeoutError('no go signal')
        time.sleep(0.001)
    art = load_or_build('race', RaceConfig(), build, root=Path(root))
    digest = hashlib.sha256(art.file('x.safetensors').read_bytes()).hexdigest()
    Path(result).write_text(json.dumps({'sha256': digest, 'builder': art.meta['builder'], 'pid': os.getpid()}))
