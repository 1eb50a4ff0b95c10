/**
 * The images of bench/container-start and the task each one runs, HelloBench style: the clock stops
 * when `expect` appears on the container's stdout.
 */
import type { DebianImageSpec } from '../lib/debian-image';

export interface ImageTask extends DebianImageSpec {
  /** argv run in the container. */
  readonly command: readonly string[];
  /** The container's stdout contains this once the task is done. */
  readonly expect: string;
  readonly description: string;
  /** Run unless --images says otherwise (the big optional images are left out by default). */
  readonly default: boolean;
}

const PY_MODULES = ['json', 're', 'os', 'sys', 'collections', 'itertools', 'functools', 'datetime', 'decimal', 'hashlib', 'subprocess', 'sqlite3', 'argparse', 'logging', 'csv', 'email.parser', 'xml.etree.ElementTree', 'urllib.request', 'asyncio'];

const APP_PACKAGES = ['python3-pandas', 'python3-sqlalchemy', 'python3-openpyxl', 'python3-lxml', 'python3-requests', 'python3-yaml'];

const HELLO_C = '#include <stdio.h>\\nint main(void) { puts(\\"hello from c\\"); return 0; }\\n';

export const IMAGES: readonly ImageTask[] = [
  {
    name: 'minbase',
    packages: [],
    command: ['echo', 'hello'],
    expect: 'hello',
    description: 'debootstrap --variant=minbase bookworm; echo hello',
    default: true,
  },
  {
    name: 'python',
    packages: ['python3'],
    command: ['python3', '-c', `import ${PY_MODULES.join(', ')}; print('python ok', len(sys.modules))`],
    expect: 'python ok',
    description: `python3; imports ${PY_MODULES.length} stdlib modules and prints`,
    default: true,
  },
  {
    name: 'gcc',
    packages: ['gcc', 'libc6-dev'],
    command: ['sh', '-c', `printf "${HELLO_C}" > /tmp/hello.c && gcc -O2 -o /tmp/hello /tmp/hello.c && /tmp/hello`],
    expect: 'hello from c',
    description: 'gcc + libc6-dev; compiles and runs hello.c',
    default: true,
  },
  {
    name: 'app',
    packages: APP_PACKAGES,
    command: [
      'python3',
      '-c',
      [
        'import io, pandas, sqlalchemy, openpyxl, lxml.etree, requests, yaml',
        "e = sqlalchemy.create_engine('sqlite://')",
        "pandas.DataFrame({'x': range(100)}).to_sql('t', e)",
        "n = int(pandas.read_sql('select count(*) as n from t', e).n[0])",
        "wb = openpyxl.Workbook(); wb.active['A1'] = n; wb.save(io.BytesIO())",
        "doc = lxml.etree.fromstring(yaml.safe_load('xml: <a><b>ok</b></a>')['xml'])",
        "print('app ok', n, doc.findtext('b'), requests.__version__)",
      ].join('; '),
    ],
    expect: 'app ok',
    description: `the ≥ 300 MB application image: ${APP_PACKAGES.join(' ')}; a DataFrame through SQLite, a workbook, YAML and XML`,
    default: true,
  },
  {
    name: 'scipy',
    packages: ['python3-scipy', 'python3-pandas'],
    command: [
      'python3',
      '-c',
      "import numpy, scipy.linalg, scipy.optimize, pandas; a = numpy.random.default_rng(1).random((200, 200)); r = scipy.optimize.minimize_scalar(lambda x: (x - 2) ** 2); df = pandas.DataFrame({'x': a[0]}); print('scipy ok', round(float(scipy.linalg.det(a @ a.T) != 0)), round(r.x, 3), len(df))",
    ],
    expect: 'scipy ok',
    description: 'python3-scipy + python3-pandas (940 MB: bookworm\'s scipy pulls pythran, gcc and boost); linear algebra, an optimisation, a DataFrame',
    // About 12 minutes of the budget on its own (full pull ~50 s, thin cold ~50 s per run): --images scipy.
    default: false,
  },
];
