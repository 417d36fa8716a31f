import sys, json, torch
from hyperclip_nb.configs import stage_configs
from hyperclip_nb.pipeline import Run
from hyperclip_nb.clip_adapter import chunk_accuracy
from hyperclip_nb.diagnostics import regress_latents
k, E, seed = map(int, sys.argv[1:4]); metric = sys.argv[4] if len(sys.argv) > 4 else 'adapted'
cfgs = stage_configs('default'); cfgs['hnet'] = cfgs['hnet'].replace(latent=k, epochs=E, val_metric=metric)
run = Run(cfgs, seed, device='cpu'); feats = run.features(); G = run.generator('hnet'); lat = run.latents('hnet')
val = lat.val_idx; sp = feats.splits['meta_train']
acc = lambda z, split='meta_train', idx=None: round(chunk_accuracy(G, z, feats, split, idx).mean().item(), 4)
qv = feats.question[sp.question_row[val]]; qt = feats.question[feats.splits['meta_test'].question_row]
out = {'k': k, 'E': E, 'metric': metric}
with torch.no_grad():
    out['val_ceiling'] = acc(lat.oracle_meta_train[val], 'meta_train', val); out['test_ceiling'] = acc(lat.oracle_meta_test, 'meta_test')
    out['val_G(z0)'] = acc(lat.z_init.expand(len(val), -1), 'meta_train', val); out['test_G(z0)'] = acc(lat.z_init.expand(len(qt), -1), 'meta_test')
    zbar = lat.latents.flatten(0, 1).mean(0)
    out['val_mean_latent'] = acc(zbar.expand(len(val), -1), 'meta_train', val)
    # nearest training question's (mean) latent
    P = lat.latents.shape[0]; tm = torch.zeros(len(lat.question), k).index_add_(0, lat.task_ids.flatten(), lat.latents.flatten(0, 1)) / P
    fit = lat.task_ids[0].sort().values
    qn = torch.nn.functional.normalize(lat.question[fit], dim=-1)
    for name, q, split, idx in (('val', qv, 'meta_train', val), ('test', qt, 'meta_test', None)):
        nn = (torch.nn.functional.normalize(q, dim=-1) @ qn.T).argmax(1)
        out[f'{name}_nn_question'] = acc(tm[fit[nn]], split, idx)
pred, loss = regress_latents(lat, seed, 4000)
with torch.no_grad():
    out['val_regressor'] = acc(pred(qv), 'meta_train', val); out['test_regressor'] = acc(pred(qt), 'meta_test'); out['reg_loss'] = loss
    # the conditional HNet's own start, P q, for reference (another q -> z map, in its own space)
print(json.dumps(out), flush=True)
