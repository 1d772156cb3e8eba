"""Mirror the collection's git-visible files into a tree for ansible-test.

Usage: sync_tree.py SOURCE DESTINATION

ansible-test needs the collection in a real directory named
.../ansible_collections/<namespace>/<name>. This script copies the files that
git lists in SOURCE as tracked, or as untracked but not ignored, into
DESTINATION, so it also works before the first commit. Files in DESTINATION
that are no longer listed are deleted, except DESTINATION/tests/output (the
ansible-test results and its delegation virtual environment, which must
persist for offline runs) and DESTINATION/.git.

DESTINATION lies inside this repository's ignored build/ directory. On its
own, ansible-test would find this repository's .git above it and ask git for
the files under DESTINATION, and git would report none because build/ is
ignored. So DESTINATION gets a git repository of its own, which is never
committed to: ansible-test lists its untracked, not-ignored files.
"""

import filecmp
import os
import shutil
import subprocess
import sys

# Paths in DESTINATION, relative to it, that this script never deletes.
KEEP = ('.git', os.path.join('tests', 'output'))


def list_source_files(source):
    """Return the relative paths that git tracks or would track in SOURCE."""
    output = subprocess.run(
        ['git', '-C', source, 'ls-files', '-z', '--cached', '--others', '--exclude-standard'],
        check=True, stdout=subprocess.PIPE,
    ).stdout.decode()

    paths = set()

    for path in output.split('\0'):
        # git still lists a tracked file after it was deleted from the work tree.
        if path and os.path.lexists(os.path.join(source, path)):
            paths.add(path)

    return paths


def copy_entry(source_path, destination_path):
    """Copy one file or symlink unless DESTINATION already has the same content and mode."""
    if os.path.islink(source_path):
        target = os.readlink(source_path)

        if os.path.islink(destination_path) and os.readlink(destination_path) == target:
            return

        remove_entry(destination_path)
        os.symlink(target, destination_path)
        return

    if (os.path.isfile(destination_path) and not os.path.islink(destination_path)
            and os.stat(source_path).st_mode == os.stat(destination_path).st_mode
            and filecmp.cmp(source_path, destination_path, shallow=False)):
        return

    remove_entry(destination_path)
    shutil.copy2(source_path, destination_path)


def remove_entry(path):
    """Delete a file, symlink or directory tree if it exists."""
    if os.path.islink(path) or os.path.isfile(path):
        os.unlink(path)
    elif os.path.isdir(path):
        shutil.rmtree(path)


def delete_stale(destination, source_paths):
    """Delete files and empty directories in DESTINATION that are not in SOURCE_PATHS."""
    for root, dir_names, file_names in os.walk(destination, topdown=True):
        relative_root = os.path.relpath(root, destination)

        if relative_root == '.':
            relative_root = ''

        for dir_name in list(dir_names):
            relative = os.path.join(relative_root, dir_name)

            if relative in KEEP:
                dir_names.remove(dir_name)
            elif os.path.islink(os.path.join(root, dir_name)):
                # os.walk does not descend into directory symlinks, so handle them as files.
                dir_names.remove(dir_name)
                file_names.append(dir_name)

        for file_name in file_names:
            relative = os.path.join(relative_root, file_name)

            if relative not in source_paths:
                os.unlink(os.path.join(root, file_name))

    # Remove directories left empty, deepest first.
    for root, dir_names, file_names in os.walk(destination, topdown=False):
        relative_root = os.path.relpath(root, destination)

        if relative_root == '.' or any(relative_root == keep or relative_root.startswith(keep + os.sep) for keep in KEEP):
            continue

        if not os.listdir(root):
            os.rmdir(root)


def init_git(destination):
    """Create DESTINATION's own git repository that ignores ansible-test's output."""
    if not os.path.isdir(os.path.join(destination, '.git')):
        subprocess.run(['git', 'init', '--quiet', destination], check=True)

    # The copied .gitignore should also ignore tests/output, but this keeps the
    # delegation virtual environment out of the sanity tests in any case.
    with open(os.path.join(destination, '.git', 'info', 'exclude'), 'w', encoding='utf-8') as exclude:
        exclude.write('/tests/output/\n')


def main():
    """Synchronize DESTINATION with the git-visible files of SOURCE."""
    if len(sys.argv) != 3:
        sys.exit('usage: sync_tree.py SOURCE DESTINATION')

    source = os.path.abspath(sys.argv[1])
    destination = os.path.abspath(sys.argv[2])
    source_paths = list_source_files(source)

    os.makedirs(destination, exist_ok=True)

    # Deleting first also clears a file that is now a directory, or the reverse.
    delete_stale(destination, source_paths)

    for relative in sorted(source_paths):
        destination_path = os.path.join(destination, relative)
        os.makedirs(os.path.dirname(destination_path), exist_ok=True)
        copy_entry(os.path.join(source, relative), destination_path)

    init_git(destination)


if __name__ == '__main__':
    main()
