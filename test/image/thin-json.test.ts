import t from 'tap';
import { formatThinJson, layerDirectory, layerPath, parseThinJson } from '../../src/image/thin-json';

const A = 'a'.repeat(64);
const B = 'b1'.repeat(32);

t.test('DUCC form round trip', async (t) => {
  const text = formatThinJson('unpacked.example.org', 'docker://reg/app:1', [`sha256:${A}`, B]);
  const doc = JSON.parse(text) as { version: string; origin: string; layers: { digest: string; url: string }[] };
  t.equal(doc.version, '1.0');
  t.equal(doc.origin, 'docker://reg/app:1');
  t.same(doc.layers, [
    { digest: A, url: `cvmfs://unpacked.example.org/.layers/aa/${A}/layerfs` },
    { digest: B, url: `cvmfs://unpacked.example.org/.layers/b1/${B}/layerfs` },
  ]);
  const thin = parseThinJson(text);
  t.same(thin.layers.map((l) => [l.digest, l.repository, l.path]), [
    [A, 'unpacked.example.org', layerPath(A)],
    [B, 'unpacked.example.org', layerPath(B)],
  ]);
  t.equal(layerDirectory(thin.layers[0]!), `/cvmfs/unpacked.example.org/.layers/aa/${A}/layerfs`);
});

t.test('the older docker2cvmfs form (cvmfs://REPO/layers/<d>) is read', async (t) => {
  const thin = parseThinJson(JSON.stringify({ version: '1.0', origin: 'x', layers: [{ digest: `sha256:${A}`, url: `cvmfs://old.repo/layers/${A}/` }] }));
  t.same(thin.layers[0], { digest: A, repository: 'old.repo', path: `layers/${A}` });
  t.equal(layerDirectory(thin.layers[0]!, '/mnt'), `/mnt/old.repo/layers/${A}`);
});

t.test('bad thin.json is a format error naming the problem', async (t) => {
  const bad: [string, RegExp][] = [
    ['not json', /not JSON/],
    ['[]', /not a JSON object/],
    ['{"layers":[]}', /no layers/],
    ['{"layers":[{"url":"cvmfs://r/x"}]}', /digest is missing/],
    [`{"layers":[{"digest":"sha256:xyz","url":"cvmfs://r/x"}]}`, /not a sha256 digest/],
    [`{"layers":[{"digest":"${A}","url":"http://r/x"}]}`, /not cvmfs:\/\/REPO\/PATH/],
    [`{"layers":[{"digest":"${A}","url":"cvmfs://r/../etc"}]}`, /unsafe path/],
  ];
  for (const [text, message] of bad) t.throws(() => parseThinJson(text), { code: 'E_FORMAT', message }, text);
});
