import sys, time, os, torch
from hyperclip_nb.configs import stage_configs, HNetConfig
from hyperclip_nb.pipeline import Run
k, E, seed = map(int, sys.argv[1:4])
metric = sys.argv[4] if len(sys.argv) > 4 else 'adapted'
cfgs = stage_configs('default')
cfgs['hnet'] = cfgs['hnet'].replace(latent=k, epochs=E, val_metric=metric)
run = Run(cfgs, seed, device='cpu')
t0 = time.time(); h = run.hnet(); print('hnet', k, E, seed, metric, round(time.time()-t0), flush=True)
t0 = time.time(); run.latents(); print('latents', round(time.time()-t0), flush=True)
for st in sys.argv[5:]:
    t0 = time.time(); getattr(run, st)(); print(st, round(time.time()-t0), flush=True)
