"HyperLDM variants on one HNet's latents; every choice on validation tasks; meta-test printed for reference only."
import sys, time, json, torch, dataclasses
from hyperclip_nb.configs import stage_configs
from hyperclip_nb.pipeline import Run
from hyperclip_nb.hyperldm import HyperLDM, choose_sampler, GAMMAS
from hyperclip_nb.diffusion import fit_diffusion
from hyperclip_nb.clip_adapter import chunk_accuracy
k, E, seed = map(int, sys.argv[1:4]); variants = sys.argv[4].split(',')
cfgs = stage_configs('default'); cfgs['hnet'] = cfgs['hnet'].replace(latent=k, epochs=E)
run = Run(cfgs, seed, device='cpu'); feats = run.features(); G = run.generator('hnet'); lat = run.latents('hnet')
val = lat.val_idx
acc = lambda z, split='meta_train', idx=None: chunk_accuracy(G, z, feats, split, idx).mean().item()
z = lat.latents.flatten(0, 1); q = lat.questions().flatten(0, 1)
mu = z.mean(0); C = torch.cov(z.T); ev, U = torch.linalg.eigh(C); ev = ev.flip(0); U = U.flip(1)
out = {'k': k, 'E': E, 'seed': seed}
with torch.no_grad():
    out['val_ceiling'] = acc(lat.oracle_meta_train[val], 'meta_train', val)
    out['test_ceiling'] = acc(lat.oracle_meta_test, 'meta_test')
    out['val_G(z0)'] = acc(lat.z_init.expand(len(val), -1), 'meta_train', val)
    r = (ev.sum() ** 2 / (ev ** 2).sum()).item(); out['eff_rank'] = r
    out['var_top'] = [round((ev[:n].sum() / ev.sum()).item(), 3) for n in (1, 4, 16, 32)]
    sd = z.std(0)
    out['std_ratio_max_min'] = (sd.max() / sd.min()).item()
    gz = torch.Generator().manual_seed(0)
    zo = lat.oracle_meta_train[val]
    out['sens'] = {s: acc(zo + s * sd * torch.randn(zo.shape, generator=gz), 'meta_train', val) for s in (0.05, 0.1, 0.2, 0.5)}
    # between-task vs within-task spread of the precompute passes
    P, N, _ = lat.latents.shape
    per_task = lat.latents  # rows in pass order; task_ids
    tm = torch.zeros(len(lat.question), k).index_add_(0, lat.task_ids.flatten(), z) / P
    within = (z - tm[lat.task_ids.flatten()]).pow(2).sum(1).mean().item(); between = (tm[lat.task_ids[0]] - mu).pow(2).sum(1).mean().item()
    out['within_between'] = (within, between)
print(json.dumps(out), flush=True)
dcfg0 = run.cfgs['hyperldm']
for v in variants:
    name, *kv = v.split(':'); kw = dict(x.split('=') for x in kv)
    dcfg = dcfg0.replace(**{a: type(getattr(dcfg0, a))(b) for a, b in kw.items()})
    t0 = time.time()
    if name == 'dim':
        x0 = (z - mu) / sd.clamp(min=1e-8); dec = lambda x: x * sd + mu
    elif name == 'pca':
        keep = ev > ev[0] * 1e-6; Uk, s = U[:, keep], ev[keep].sqrt()
        x0 = (z - mu) @ Uk / s; dec = lambda x, Uk=Uk, s=s: (x * s) @ Uk.T + mu
    elif name.startswith('pcav'):
        frac = float(name[4:]); cum = ev.cumsum(0) / ev.sum(); r = int((cum < frac).sum()) + 1
        Uk, s = U[:, :r], ev[:r].sqrt(); print('keep', r, flush=True)
        x0 = (z - mu) @ Uk / s; dec = lambda x, Uk=Uk, s=s: (x * s) @ Uk.T + mu
    elif name == 'global':
        s = (z - mu).pow(2).mean().sqrt(); x0 = (z - mu) / s; dec = lambda x, s=s: x * s + mu
    model, sched, hist = fit_diffusion(x0, q, dcfg)
    class L(HyperLDM):
        def sample(self, question, guidance_scale=1., steps=50, generator=0, eta=0.):
            from hyperclip_nb.diffusion import sample
            return dec(sample(self.model, self.sched, question, guidance_scale, steps, eta, generator=generator, x0_max=self.x0_max))
    ldm = L(model, sched, mu, sd, x0.abs().max().item(), val)
    with torch.no_grad():
        g, eta, table = choose_sampler(ldm, G, feats, val, seed=1000 + seed)
        zt = ldm.sample(feats.question[feats.splits['meta_test'].question_row], g, 50, seed, eta)
        res = {'variant': v, 'val_best': table[eta][g], 'gamma': g, 'eta': eta, 'val_by_gamma_eta0': table[0.0],
               'test': acc(zt, 'meta_test'), 'loss_end': sum(hist['loss'][-500:]) / 500, 'sec': round(time.time() - t0)}
    print(json.dumps(res), flush=True)
