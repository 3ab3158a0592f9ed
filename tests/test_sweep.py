"""The sweep runner: trials from a recipe's get_hyper, their commands and
workdirs, skipping finished trials, resuming unfinished ones, and the
results tables."""

import csv
import json
import shlex

import pytest

from hpe_jax.runtime import metric_writer
from launch import hyper
from launch import sweep
from conftest import ROOT
from conftest import TINY_FLAGS


def test_products_and_zips():
  trials = hyper.product([hyper.sweep('a', [1, 2]),
                          hyper.zipit([hyper.sweep('b', ['x', 'y']),
                                       hyper.sweep('c', [(1, 2), (3, 4)])])])
  assert trials == [{'a': 1, 'b': 'x', 'c': (1, 2)},
                    {'a': 1, 'b': 'y', 'c': (3, 4)},
                    {'a': 2, 'b': 'x', 'c': (1, 2)},
                    {'a': 2, 'b': 'y', 'c': (3, 4)}]
  with pytest.raises(ValueError, match='one length'):
    hyper.zipit([hyper.sweep('a', [1, 2]), hyper.sweep('b', [1])])
  with pytest.raises(ValueError, match='set twice'):
    hyper.product([hyper.sweep('a', [1]), hyper.fixed('a', 2)])


def test_flag_values_read_back_as_configs_expect():
  assert sweep.flag_value(True) == 'true'
  assert sweep.flag_value((64, 64)) == '(64,64)'
  assert sweep.flag_value((1,)) == '(1,)'
  assert sweep.flag_value(2.5e-4) == '0.00025'
  assert sweep.flag_value('adam') == 'adam'


@pytest.mark.parametrize('recipe, expected', [
    ('configs/hourglass.py:smoke',
     [('configs/hourglass.py:smoke', f'model.num_stacks={n}',
       [f'--config.model.num_stacks={n}']) for n in (1, 2, 4, 8)]),
    ('configs/unet_multitask.py',
     [(f'configs/unet_multitask.py:{h},smoke', f'arg={h},smoke', [])
      for h in ('reg', 'softmax', 'regsoftmax', 'triple')]),
    ('configs/hnet_unet.py',
     [('configs/unet.py:smoke', 'config=unet-smoke', []),
      ('configs/hnet_unet.py:smoke', 'config=hnet_unet-smoke', [])]),
])
def test_shipped_sweeps_print_their_commands(recipe, expected, capsys,
                                             monkeypatch):
  monkeypatch.chdir(ROOT)
  assert sweep.main([f'--config={recipe}', '--workdir_root=/sweeps/x',
                     '--print_commands', '--config.total_steps=7']) == 0
  lines = capsys.readouterr().out.strip().split('\n')
  assert [shlex.split(line) for line in lines] == [
      ['python', '-m', 'hpe_jax.main', f'--config={config}',
       f'--workdir=/sweeps/x/{name}', *flags, '--config.total_steps=7']
      for config, name, flags in expected]


def test_a_recipe_without_a_sweep_is_an_error(monkeypatch):
  monkeypatch.chdir(ROOT)
  with pytest.raises(ValueError, match='get_hyper'):
    sweep.make_trials('configs/cpm.py:smoke', '/tmp/x')


TINY_RECIPE = '''
import importlib.util

def get_config(arg=None):
  spec = importlib.util.spec_from_file_location('hg', {hourglass!r})
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)

def get_hyper(h):
  return h.sweep('model.features', [8, 16])
'''


def test_sweep_runs_skips_and_resumes_trials(tmp_path, monkeypatch):
  monkeypatch.chdir(ROOT)
  recipe = tmp_path / 'tiny.py'
  recipe.write_text(TINY_RECIPE.format(
      hourglass=str(ROOT / 'configs' / 'hourglass.py')))
  root = tmp_path / 'sweep'
  flags = [f'--config={recipe}:smoke', f'--workdir_root={root}',
           '--parallel=2', *[f for f in TINY_FLAGS
                             if 'model.features' not in f],
           '--config.total_steps=4', '--config.eval_every=2',
           '--config.log_every=2', '--config.eval_at_start=false']
  assert sweep.main(flags) == 0
  with open(root / 'results.csv') as f:
    rows = list(csv.DictReader(f))
  assert [r['trial'] for r in rows] == ['model.features=8',
                                        'model.features=16']
  assert [r['model.features'] for r in rows] == ['8', '16']
  for row in rows:
    assert row['status'] == 'finished' and row['steps'] == '4'
    assert float(row['wall_s']) > 0 and float(row['eval/pck@0.2_torso']) >= 0
    assert float(row['best eval/pck@0.2_torso']) >= float(
        row['eval/pck@0.2_torso'])
  assert int(rows[1]['params']) > int(rows[0]['params']) > 0
  table = (root / 'results.md').read_text()
  assert table.count('\n') == 4 and 'pck@0.2_torso (best)' in table
  # Per-joint figures are in the CSV, not in the table.
  assert float(rows[0]['eval/pck@0.2_torso/nose']) >= 0
  assert 'pck@0.2_torso/nose' not in table
  # A count is a plain column: the last value, no "best".
  assert [r['damaged_examples'] for r in rows] == ['0.0', '0.0']
  assert 'damaged_examples (best)' not in table

  # A finished trial is skipped; an unfinished one resumes where it was.
  first = root / 'model.features=8'
  state = json.loads((first / sweep.TRIAL_FILE).read_text())
  state['finished'] = False
  (first / sweep.TRIAL_FILE).write_text(json.dumps(state))
  logged = metric_writer.read_metrics(str(first))
  assert sweep.main(flags + ['--config.total_steps=6']) == 0
  again = metric_writer.read_metrics(str(first))
  assert again[:len(logged)] == logged and again[-1]['step'] == 6
  second = metric_writer.read_metrics(str(root / 'model.features=16'))
  assert second[-1]['step'] == 4
  resumed = json.loads((first / sweep.TRIAL_FILE).read_text())
  assert resumed['finished'] and resumed['wall_s'] > state['wall_s']


def test_a_failing_trial_is_reported(tmp_path, monkeypatch):
  monkeypatch.chdir(ROOT)
  root = tmp_path / 'sweep'
  status = sweep.main(['--config=configs/hnet_unet.py',
                       f'--workdir_root={root}',
                       '--config.no_such_key=1'])
  assert status == 1
  with open(root / 'results.csv') as f:
    assert {r['status'] for r in csv.DictReader(f)} == {'failed'}
  assert 'no_such_key' in (root / 'config=unet-smoke' /
                           sweep.LOG_FILE).read_text()
