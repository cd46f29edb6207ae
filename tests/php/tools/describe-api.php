<?php
// Prints the Forklift API as JSON, read by reflection: from the loaded extension (no argument) or
// from the stub file given as argument (run without the extension). StubTest compares the two.
declare(strict_types=1);

function describeType(?ReflectionType $t): ?string
{
    return $t === null ? null : (string) $t;
}

function describeFunction(ReflectionFunctionAbstract $f): array
{
    $params = [];
    foreach ($f->getParameters() as $p) {
        $params[] = [
            'name' => $p->getName(),
            'type' => describeType($p->getType()),
            'optional' => $p->isOptional(),
            'variadic' => $p->isVariadic(),
        ];
    }
    return ['params' => $params, 'returns' => describeType($f->getReturnType())];
}

function describeClass(ReflectionClass $c): array
{
    $methods = [];
    foreach ($c->getMethods() as $m) {
        // A constructor without parameters only says "not instantiable"; stubs make it private.
        if ($m->getDeclaringClass()->getName() !== $c->getName()
            || ($m->isConstructor() && $m->getNumberOfParameters() === 0)) {
            continue;
        }
        $methods[$m->getName()] = describeFunction($m) + ['static' => $m->isStatic()];
    }
    ksort($methods);
    $parent = $c->getParentClass();
    return [
        'parent' => $parent ? $parent->getName() : null,
        'final' => $c->isFinal(),
        'methods' => $methods,
    ];
}

if (isset($argv[1])) {
    if (extension_loaded('forklift')) {
        fwrite(STDERR, "describe the stub in a PHP without the forklift extension loaded\n");
        exit(2);
    }
    require $argv[1];
    $classes = array_filter(get_declared_classes(), fn ($c) => str_starts_with($c, 'Forklift\\'));
    $functions = array_filter(get_defined_functions()['user'], fn ($f) => str_starts_with($f, 'forklift\\'));
} else {
    $ext = new ReflectionExtension('forklift');
    $classes = $ext->getClassNames();
    $functions = array_map('strtolower', array_keys($ext->getFunctions()));
}

$api = ['functions' => [], 'classes' => []];
foreach ($functions as $f) {
    $api['functions'][strtolower($f)] = describeFunction(new ReflectionFunction($f));
}
foreach ($classes as $c) {
    $api['classes'][$c] = describeClass(new ReflectionClass($c));
}
ksort($api['functions']);
ksort($api['classes']);
echo json_encode($api, JSON_PRETTY_PRINT | JSON_UNESCAPED_SLASHES), "\n";
