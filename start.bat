@echo off
rem LoRA Studio launcher for Windows: double-click it.
rem
rem First run: makes a Python environment in .venv beside this file, installs requirements.txt with
rem the tested versions of constraints.txt, then starts the app and opens the browser on it.
rem Later runs reuse .venv and start in seconds. The install counts as done only once pip has
rem finished: .venv\.lora-studio-installed then holds a hash of both files, so an interrupted or
rem failed install is retried on the next run and a changed requirements file installs again.
rem
rem   start.bat [launch.py options]      e.g. start.bat --port 7861 --no-browser
rem
rem LORA_STUDIO_PYTHON=C:\path\to\python.exe picks the Python that makes .venv.
rem Torch: PyPI's Windows torch runs on the CPU only. When nvidia-smi is found, the first install
rem takes torch from PyTorch's CUDA index instead (LORA_STUDIO_TORCH_INDEX overrides the address);
rem if that fails it says so and goes on with the CPU build.

setlocal EnableExtensions DisableDelayedExpansion
cd /d "%~dp0"
set "HERE=%~dp0"
set "VENV=%HERE%.venv"
set "PY=%VENV%\Scripts\python.exe"
set "MARKER=%VENV%\.lora-studio-installed"
set "LOG=%VENV%\install.log"
set "CHECK=import sys; sys.exit(int(sys.version_info < (3, 10)))"

rem 1. The environment: made once; a broken one (old Python, no pip) is made again.
if not exist "%PY%" goto :make_venv
"%PY%" -c "%CHECK%" >nul 2>nul || goto :make_venv
"%PY%" -m pip --version >nul 2>nul || goto :make_venv
goto :packages

:make_venv
call :find_python
if not defined BASE goto :no_python
echo Creating the Python environment in %VENV% ...
if exist "%VENV%" rmdir /s /q "%VENV%"
%BASE% -m venv "%VENV%"
if errorlevel 1 goto :venv_failed
"%PY%" -m pip --version >nul 2>nul || goto :venv_failed

rem 2. The packages: installed when the hash of requirements + constraints is not the one recorded.
:packages
"%PY%" -c "import hashlib; d = hashlib.sha256(); [d.update(n.encode() + bytes(1) + open(n, 'rb').read() + bytes(1)) for n in ('requirements.txt', 'constraints.txt')]; print(d.hexdigest())" > "%VENV%\wanted-hash.txt"
if errorlevel 1 goto :no_requirements
set "WANT="
set "HAVE="
set /p WANT=<"%VENV%\wanted-hash.txt"
if exist "%MARKER%" set /p HAVE=<"%MARKER%"
if "%WANT%"=="%HAVE%" goto :installed
if exist "%MARKER%" del "%MARKER%"
echo Installing LoRA Studio's packages into .venv: the first time takes several minutes.
call :cuda_torch
if exist "%LOG%" del "%LOG%"
"%PY%" -m pip install --disable-pip-version-check --log "%LOG%" -r requirements.txt -c constraints.txt
if errorlevel 1 goto :install_failed
> "%MARKER%" echo %WANT%
echo Packages installed.
goto :start

:installed
echo Packages already installed; starting (no install needed).

rem 3. The app: launch.py with this launcher's arguments; it opens the browser on a local launch.
:start
"%PY%" "%HERE%launch.py" %*
if errorlevel 1 pause
exit /b %errorlevel%

rem ---- helpers and messages ----------------------------------------------------------------------
:find_python
set "BASE="
if defined LORA_STUDIO_PYTHON call :try_python "%LORA_STUDIO_PYTHON%"
if not defined BASE call :try_python py -3.13
if not defined BASE call :try_python py -3.12
if not defined BASE call :try_python py -3.11
if not defined BASE call :try_python py -3.10
if not defined BASE call :try_python python
exit /b 0

:try_python
rem A Python 3.10+ (the py launcher with a version, or a python.exe); the Store's stub fails here.
%* -c "%CHECK%" >nul 2>nul
if errorlevel 1 exit /b 1
set BASE=%*
exit /b 0

:cuda_torch
where nvidia-smi >nul 2>nul || exit /b 0
set "TORCH_INDEX=https://download.pytorch.org/whl/cu128"
if defined LORA_STUDIO_TORCH_INDEX set "TORCH_INDEX=%LORA_STUDIO_TORCH_INDEX%"
echo An NVIDIA GPU was found: installing the CUDA build of torch from %TORCH_INDEX% ...
"%PY%" -m pip install --disable-pip-version-check torch -c constraints.txt --index-url "%TORCH_INDEX%"
if not errorlevel 1 exit /b 0
echo.
echo The CUDA build of torch could not be installed from %TORCH_INDEX%; going on with PyPI's torch,
echo which runs on the CPU only. To try again with another CUDA index, delete the .venv folder and set
echo LORA_STUDIO_TORCH_INDEX, e.g. https://download.pytorch.org/whl/cu126, before running this.
echo.
exit /b 0

:no_python
echo LoRA Studio needs Python 3.10 or newer, and none was found on this computer.
echo Install Python 3.12 from https://www.python.org/downloads/windows/ and tick
echo "Add python.exe to PATH" in the installer, or: winget install Python.Python.3.12
echo Then double-click start.bat again.
goto :fail

:venv_failed
echo Could not create a Python environment in %VENV% with %BASE%.
echo Reinstall Python 3.12 from https://www.python.org/downloads/windows/ and try again.
if exist "%VENV%" rmdir /s /q "%VENV%"
goto :fail

:no_requirements
echo Could not read requirements.txt and constraints.txt in %HERE%.
goto :fail

:install_failed
echo.
echo The install did not finish. The end of the pip log (%LOG%):
powershell -NoProfile -Command "Get-Content -Tail 20 -LiteralPath $env:LOG" 2>nul
echo.
echo Check the internet connection and free disk space (torch alone needs several GB), then run
echo this again: it retries the install and keeps what was already downloaded.
goto :fail

:fail
pause
exit /b 1
